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
import importlib
import os
import sys
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING


def _patcher() -> types.ModuleType | None:
    return sys.modules.get("eventlet.patcher")


def original(name: str, patched_as: str | None = None) -> types.ModuleType:
    """The module ``name`` as the OS provides it: eventlet's saved original
    once eventlet has monkey-patched it (``patched_as``: eventlet's name for
    the patch, when it differs), else the module itself."""
    patcher = _patcher()
    if patcher is not None and patcher.is_monkey_patched(patched_as or name):
        saved: types.ModuleType = patcher.original(name)
        return saved
    return importlib.import_module(name)


def green() -> bool:
    """True in a process whose threads eventlet has made green."""
    patcher = _patcher()
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))


def green_caller() -> bool:
    """True when blocking this OS thread would stop green threads: eventlet
    has monkey-patched the process and runs a hub in this thread (moot's own
    real threads run none: they block as usual)."""
    if not green():
        return False
    local = getattr(sys.modules.get("eventlet.hubs"), "_threadlocal", None)
    return local is None or hasattr(local, "hub")


def pause(seconds: float) -> None:
    """Sleep ``seconds`` in the caller's kind of thread: a green thread lets the
    application's other green threads run, a real thread really sleeps."""
    if green_caller():
        time.sleep(seconds)
    else:
        original("time").sleep(seconds)


#: A green waiter's first and longest pause in :func:`wait_until`.
FIRST_PAUSE = 0.0002  # about one loopback round trip
LONGEST_PAUSE = 0.01


def wait_until(ready: Callable[[], bool], block: Callable[[float], object], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until ``ready()``; True if it is. A
    real thread blocks in ``block(timeout)`` (a real event's or condition's
    wait); a green thread pauses with ``time.sleep`` (eventlet's there), so
    the application's other green threads run meanwhile."""
    if ready():
        return True
    if not green_caller():
        block(timeout)
        return ready()
    until = time.monotonic() + timeout
    pause = FIRST_PAUSE
    while not ready():
        left = until - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, LONGEST_PAUSE)
    return True


if TYPE_CHECKING:
    import select
    import threading
else:
    threading = original("threading", "thread")
    select = original("select")
#: The OS's own read and write: eventlet's green ones yield to the hub even
#: when data is there, which must never happen while a real lock is held.
real_os = original("os")


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
                real_os.write(self._write, b"x")

    def clear(self) -> None:
        with self._mutex:
            if self._flag:  # set() wrote exactly one byte: take it back
                self._flag = False
                real_os.read(self._read, 1)

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
    if green():
        return _PipeEvent()  # type: ignore[return-value]
    return threading.Event()


__all__ = ["Event", "green", "green_caller", "original", "real_os", "select", "threading", "wait_until"]
