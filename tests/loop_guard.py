"""Catches moot doing I/O or waiting on an event loop's thread.

Every I/O of moot happens in ``moot/backends/``, and every blocking wait in
``moot.waits.run``, ``moot.realthreads.pause`` or ``Session.wait_for_session``.
:class:`LoopGuard` installs a profile function on the loop's thread that
records each call into one of those: with moot.aio, none may run there (they
belong on the driver's worker threads). Unlike asyncio's slow-callback
report, which also fires when the loop thread merely waits for the CPU or
the GIL on a busy machine, this names the cause, and only moot's.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from types import FrameType
from typing import Any

import moot

_MOOT = os.path.dirname(os.path.abspath(moot.__file__))
_IO = os.path.join(_MOOT, "backends") + os.sep
_BLOCKING = {
    (os.path.join(_MOOT, "waits.py"), "run"),
    (os.path.join(_MOOT, "realthreads.py"), "pause"),
    (os.path.join(_MOOT, "session.py"), "wait_for_session"),
}


class LoopGuard:
    """Records moot's blocking calls made on one loop's thread."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._lock = threading.Lock()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``loop``'s thread from now on (call from any thread)."""
        if loop.is_running() and threading.get_ident() != getattr(loop, "_thread_id", None):
            done = threading.Event()

            def on_loop() -> None:
                sys.setprofile(self._profile)
                done.set()

            loop.call_soon_threadsafe(on_loop)
            done.wait(10)
        else:
            sys.setprofile(self._profile)

    def uninstall(self) -> None:
        """Stop watching (call on the loop's thread)."""
        sys.setprofile(None)

    def take(self) -> list[str]:
        """The violations recorded so far; forgotten after this call."""
        with self._lock:
            seen, self.violations = self.violations, []
        return seen

    def _profile(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call":
            return
        path = frame.f_code.co_filename
        if path.startswith(_IO) or (path, frame.f_code.co_name) in _BLOCKING:
            caller = frame.f_back
            where = f"{caller.f_code.co_filename}:{caller.f_lineno}" if caller else "?"
            with self._lock:
                self.violations.append(f"{os.path.relpath(path, _MOOT)}:{frame.f_code.co_name} called on the "
                                       f"event loop's thread from {where}")
