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

import contextvars
import time
from types import TracebackType

from moot.errors import ConnectionLost

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("moot_deadline", default=None)


class bounded:  # a class, not @contextmanager: no generator per call (the hot path of every acquire)
    """Run the block under ``deadline`` (a ``time.monotonic()`` instant; None
    adds no bound). Nested bounds keep the earlier of the two."""

    __slots__ = ("_deadline", "_token")

    def __init__(self, deadline: float | None):
        self._deadline = deadline
        self._token: contextvars.Token[float | None] | None = None

    def __enter__(self) -> None:
        deadline = self._deadline
        if deadline is not None:
            outer = _deadline.get()
            if outer is None or outer > deadline:
                self._token = _deadline.set(deadline)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        token = self._token
        if token is not None:
            self._token = None
            _deadline.reset(token)


#: A block under no bound added (reusable: it sets nothing).
UNBOUNDED = bounded(None)


class replaced(bounded):
    """Run the block under ``deadline`` whatever the caller's was (cleanup
    that must be tried even though the caller's deadline has passed)."""

    __slots__ = ()

    def __init__(self, deadline: float):
        super().__init__(deadline)

    def __enter__(self) -> None:
        self._token = _deadline.set(self._deadline)


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
