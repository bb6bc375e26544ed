"""The caller's deadline, carried to the backend's I/O.

A recipe call with a deadline (``acquire(timeout=1)``, or any call, bounded by
the coordinator's ``timeout``) runs its primitives inside :func:`bounded`.
Backends bound every blocking step (connect, send, receive, waiting for a
reconnect) by :func:`remaining`, so a call returns or raises within its
deadline plus a small slack, however the engine misbehaves (down, refusing,
accepting and never answering). The deadline is per thread (a context
variable): the heartbeat's deadline never leaks into an application thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

from moot.errors import ConnectionLost

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("moot_deadline", default=None)


@contextlib.contextmanager
def bounded(deadline: float | None) -> Iterator[None]:
    """Run the block under ``deadline`` (a ``time.monotonic()`` instant; None
    adds no bound). Nested bounds keep the earlier of the two."""
    outer = _deadline.get()
    if deadline is None or (outer is not None and outer <= deadline):
        yield
        return
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


@contextlib.contextmanager
def replaced(deadline: float) -> Iterator[None]:
    """Run the block under ``deadline`` whatever the caller's was (cleanup
    that must be tried even though the caller's deadline has passed)."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def current() -> float | None:
    """The deadline in force on this thread, None if none."""
    return _deadline.get()


def remaining(limit: float) -> float:
    """Seconds a blocking step may take: ``limit`` (the backend's own bound
    for one step), cut to what is left of the caller's deadline; never
    negative. Raises ConnectionLost when the deadline has already passed, so
    no I/O is even started after it."""
    deadline = _deadline.get()
    if deadline is None:
        return limit
    left = deadline - time.monotonic()
    if left <= 0:
        raise ConnectionLost("the call's deadline passed before the engine answered")
    return min(limit, left)
