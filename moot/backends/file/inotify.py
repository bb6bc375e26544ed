"""Watches of the file:// backend: one inotify instance and one reader thread
per process, shared by every backend object in it (a user gets only 128
inotify instances by default).

A dying process closes its spares, which inotify reports as ``IN_CLOSE_WRITE``
of the spare's name: that wakes every watch on the directory (deaths are rare;
wake-ups may be spurious).
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct

from moot.backends.base import CallbackWatch, Dispatcher
from moot.backends.file.format import SPARE
from moot.realthreads import select, threading

_IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO = 0x8, 0x40, 0x80
_IN_CREATE, _IN_DELETE = 0x100, 0x200
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ONLYDIR = 0x4000, 0x8000, 0x1000000
_MASK = _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, name length

_Target = tuple[CallbackWatch, Dispatcher]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def _check_call(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class _Spot:
    """The watches on one directory: by file name, and on any key file."""

    __slots__ = ("any", "names")

    def __init__(self) -> None:
        self.names: dict[str, set[_Target]] = {}
        self.any: set[_Target] = set()

    def everything(self) -> list[_Target]:
        return [*self.any, *(t for targets in self.names.values() for t in targets)]


class Inotify:
    """One inotify instance and reader thread per process, shared by every
    FileBackend in it (inotify instances are a scarce per-user resource)."""

    _current: Inotify | None = None
    _guard = threading.Lock()

    @classmethod
    def acquire(cls) -> Inotify:
        with cls._guard:
            if cls._current is None:
                cls._current = cls()
            cls._current._users += 1
            return cls._current

    def release(self) -> None:
        with self._guard:
            self._users -= 1
            if self._users > 0 or Inotify._current is not self:
                return
            Inotify._current = None
        os.write(self._wake_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        self._close_fds()

    def __init__(self) -> None:
        self._fd = _check_call(_libc().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        self._wake_r, self._wake_w = os.pipe()
        self._users = 0
        self._lock = threading.Lock()
        self._spots: dict[int, _Spot] = {}
        self._thread = threading.Thread(target=self._run, name="moot-file-inotify", daemon=True)
        self._thread.start()

    def _close_fds(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)

    def add(self, path: str, name: str | None, watch: CallbackWatch, dispatcher: Dispatcher) -> int:
        with self._lock:
            wd = _check_call(_libc().inotify_add_watch(self._fd, os.fsencode(path), _MASK))
            spot = self._spots.setdefault(wd, _Spot())
            targets = spot.any if name is None else spot.names.setdefault(name, set())
            targets.add((watch, dispatcher))
            return wd

    def remove(self, wd: int, name: str | None, watch: CallbackWatch) -> None:
        with self._lock:
            spot = self._spots.get(wd)
            if spot is None:
                return
            targets = spot.any if name is None else spot.names.get(name, set())
            for target in [t for t in targets if t[0] is watch]:
                targets.discard(target)
            if name is not None and not targets:
                spot.names.pop(name, None)
            if not spot.any and not spot.names:
                del self._spots[wd]
                _libc().inotify_rm_watch(self._fd, wd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = [fd for fd, _ in poller.poll()]
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            for watch, dispatcher in self._route(data):
                dispatcher.submit(watch.fire)

    def _route(self, data: bytes) -> set[_Target]:
        """The watches that a batch of inotify events concerns."""
        fire: set[_Target] = set()
        with self._lock:
            offset = 0
            while offset < len(data):
                wd, mask, _, size = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size:offset + _EVENT.size + size]
                offset += _EVENT.size + size
                if mask & _IN_Q_OVERFLOW:
                    for spot in self._spots.values():
                        fire.update(spot.everything())
                    continue
                found = self._spots.get(wd)
                if found is None:
                    continue
                spot = found
                if mask & _IN_IGNORED:  # the directory is gone: nothing more will come from it
                    fire.update(spot.everything())
                    del self._spots[wd]
                    continue
                name = raw.split(b"\0", 1)[0].decode(errors="replace")
                if name.startswith(SPARE) and mask & _IN_CLOSE_WRITE:  # an owner closed or died
                    fire.update(spot.everything())
                    continue
                fire.update(spot.names.get(name, ()))
                if name[:1] != "." and "." not in name:  # a key file, not a subdirectory
                    fire.update(spot.any)
        return fire

    @classmethod
    def after_fork_in_child(cls) -> None:
        """Forget the parent's instance: close this process's copies of its
        descriptors (its reader thread did not survive the fork)."""
        watcher, cls._current = cls._current, None
        cls._guard = threading.Lock()
        if watcher is not None:
            watcher._close_fds()
