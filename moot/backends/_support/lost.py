"""One wording for a lost engine: the ConnectionLost every network backend
raises when a call could not reach its engine in time."""

from __future__ import annotations

import time

from moot import deadline
from moot.errors import ConnectionLost


def connection_lost(where: str, exc: BaseException, started: float, what: str | None = None) -> ConnectionLost:
    """The ConnectionLost for ``exc`` met by a request to ``where`` (e.g.
    ``"redis at redis://host:6379/0"``, already redacted) that started at
    ``started`` (``time.monotonic()``): it says whether the engine refused,
    did not answer in time, or could not be reached (``what`` overrides
    that), and the time really spent.

    When the caller's deadline (:mod:`moot.deadline`) had passed by the time
    the request gave up, the deadline is what ended it, and the message says
    so with how much of it was left when the request started: a request that
    gave up "after 0.00s" started with the caller's time already spent (by
    the steps before it: retries, other requests of the same call), which
    says nothing about the engine's speed."""
    if what is None:
        if isinstance(exc, ConnectionRefusedError):
            what = f"refused the connection ({exc})"
        elif isinstance(exc, TimeoutError):
            what = f"did not answer in time ({exc or 'timed out'})"
        else:
            what = f"is unreachable ({str(exc).strip() or type(exc).__name__})"
    return ConnectionLost(f"{where} {what}; gave up {spent(started)}")


def spent(started: float) -> str:
    """``"after 1.23s"``: the time since ``started`` (``time.monotonic()``),
    for a message saying why a request gave up. When the caller's deadline
    had passed, it says so, with how much of it was left at ``started``."""
    now = time.monotonic()
    elapsed = now - started
    ends = deadline.current()
    if ends is None or now < ends:
        return f"after {elapsed:.2f}s"
    left = max(0.0, ends - started)
    return (f"after {elapsed:.2f}s, when the caller's deadline passed (this request started with {left:.2f}s "
            f"of it left{': the time had gone to the steps before it' if left < 0.005 else ''})")
