"""One wording for a lost engine: the ConnectionLost every network backend
raises when a call could not reach its engine in time."""

from __future__ import annotations

import time

from moot.errors import ConnectionLost


def connection_lost(where: str, exc: BaseException, started: float, what: str | None = None) -> ConnectionLost:
    """The ConnectionLost for ``exc`` met by a call to ``where`` (e.g. ``"redis
    at redis://host:6379/0"``, already redacted) that started at ``started``
    (``time.monotonic()``): it says whether the engine refused, did not answer
    in time, or could not be reached (``what`` overrides that), and the time
    really spent."""
    elapsed = time.monotonic() - started
    if what is None:
        if isinstance(exc, ConnectionRefusedError):
            what = f"refused the connection ({exc})"
        elif isinstance(exc, TimeoutError):
            what = f"did not answer in time ({exc or 'timed out'})"
        else:
            what = f"is unreachable ({str(exc).strip() or type(exc).__name__})"
    return ConnectionLost(f"{where} {what}; gave up after {elapsed:.2f}s")
