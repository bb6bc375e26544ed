"""Real OS threads (and the real ``select``), also in a process that eventlet
has monkey-patched.

``threading`` here is the standard module, or, once ``eventlet.monkey_patch()``
has replaced it with green threads, eventlet's saved copy of the original.
moot's heartbeat and watchdog (and the backends' I/O threads) are made from it: a green
thread would stop renewing the session whenever the application's green
threads keep the hub busy (a CPU-bound loop of a few seconds loses every
lock), which is exactly what a heartbeat must survive. Their events and
locks are real too, so setting one from a green thread wakes them at once.

``select`` is the standard module or eventlet's saved original, which keeps
``select.poll`` (monkey-patching removes it): moot's own I/O threads wait on
their descriptors with it, outside eventlet's hub.

:func:`Event` makes the events that application threads wait on while moot's
own threads set them: under eventlet a real ``threading.Event`` would block
the waiting green thread's whole hub, so there it is an event that wakes its
waiter through a pipe, which the hub watches like any socket.

The modules are looked up when moot is imported, so monkey-patch first (as
eventlet itself requires): patching after moot was imported turns the
standard module's locks and threads green in place, where moot cannot get
the originals back.
"""

from __future__ import annotations

import contextlib
import os
import select as _select
import sys
import threading as _threading
import time
import types
from typing import TYPE_CHECKING


def _original(name: str, patched_as: str, standard: types.ModuleType) -> types.ModuleType:
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched(patched_as):
        original: types.ModuleType = eventlet_patcher.original(name)
        return original
    return standard


if TYPE_CHECKING:
    import select
    import threading
else:
    threading = _original("threading", "thread", _threading)
    select = _original("select", "select", _select)
#: The OS's own read and write: eventlet's green ones yield to the hub even
#: when data is there, which must never happen while a real lock is held.
_os = _original("os", "os", os)



def _eventlet_patched() -> bool:
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    return eventlet_patcher is not None and bool(eventlet_patcher.is_monkey_patched("thread"))


class _PipeEvent:
    """``threading.Event``'s interface; set from any thread, waited on by a
    green thread (or a real one) without blocking eventlet's hub."""

    def __init__(self) -> None:
        self._flag = False
        self._mutex = threading.Lock()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._mutex:
            if not self._flag:
                self._flag = True
                _os.write(self._write, b"x")

    def clear(self) -> None:
        with self._mutex:
            if self._flag:  # set() wrote exactly one byte: take it back
                self._flag = False
                _os.read(self._read, 1)

    def wait(self, timeout: float | None = None) -> bool:
        from eventlet import hubs
        from eventlet.timeout import Timeout

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                hubs.trampoline(self._read, read=True, timeout=remaining)
            except Timeout:
                break
        return self._flag

    def __del__(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def Event() -> threading.Event:
    """An event that application threads may wait on (see the module docstring)."""
    if _eventlet_patched():
        return _PipeEvent()  # type: ignore[return-value]
    return threading.Event()


__all__ = ["Event", "select", "threading"]
