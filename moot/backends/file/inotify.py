"""Watches of the file:// backend: one inotify instance and one reader thread
per process, shared by every backend object in it (a user gets only 128
inotify instances by default).

An ephemeral key lives as long as its owner's session file is flocked. A
session's file is closed for writing only once, by its owner's last close
(closing the session, or dying): inotify reports it as ``IN_CLOSE_WRITE`` of
the session's name in the sessions directory. That wakes the watches on a key
the session owns (each watch on a key follows the owner written in that key's
header as it changes) and every watch on a prefix under the same root (wake-ups
there may be spurious). The kernel reports that close a moment before it drops
the flock, so a watch is woken only once the flock is seen dropped.

The same events keep a cache of the owners known alive, so that a listing
need not probe each owner's flock again (:meth:`Inotify.known_alive`): an
owner is remembered once a probe found it alive, forgotten when its close or
removal is read, and never remembered again after that. A listing first
reads every event already queued (under the lock the reader thread holds
while it reads and routes a batch), so any owner dead before the listing
began was forgotten before it looks.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import os
import struct
import termios
from collections.abc import Iterable

from moot.backends.base import CallbackWatch, Dispatcher
from moot.backends.file.format import SESSION_RE, alive, owner_of
from moot.realthreads import pause, select, threading

_IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO = 0x8, 0x40, 0x80
_IN_CREATE, _IN_DELETE = 0x100, 0x200
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ONLYDIR = 0x4000, 0x8000, 0x1000000
_IN_MODIFY = 0x2  # of a directory's .lock: its slot may have changed (see slot.py)
_MASK = _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, name length
#: How long a closed session's flock may linger before its watches are woken anyway.
_DROP_BOUND = 5.0
#: Owners remembered (alive, or closed) per process; past it, all are forgotten at once.
_MAX_KNOWN = 65536
#: Batches of queued events a listing reads itself before it gives up on the cache.
_CATCH_UP = 4

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


def _locked(path: str) -> bool:
    """True while the file at ``path`` (a session file) is flocked by its owner."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return alive(fd)
    finally:
        os.close(fd)


class _Named:
    """A watch on one key file, and the session owning that key (if any)."""

    __slots__ = ("owner", "path", "sessions", "target")

    def __init__(self, target: _Target, path: str, sessions: int):
        self.target, self.path, self.sessions = target, path, sessions
        self.owner: str | None = None


class _Spot:
    """The watches on one directory: by file name, and on any key file."""

    __slots__ = ("any", "names", "sessions")

    def __init__(self, sessions: int) -> None:
        self.names: dict[str, set[_Named]] = {}
        self.any: set[_Target] = set()
        self.sessions = sessions  # the wd of its root's sessions directory

    def everything(self) -> list[_Target]:
        return [*self.any, *(n.target for named in self.names.values() for n in named)]


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
        self._sessions: dict[int, str] = {}  # wd of a sessions directory -> its path
        self._session_wds: dict[str, int] = {}  # and back
        self._owned: dict[tuple[int, str], set[_Named]] = {}  # (sessions wd, session) -> watches on its keys
        self._records: dict[int, int] = {}  # wd of a watched directory's .lock -> the directory's wd
        self._alive: dict[int, set[str]] = {}  # sessions wd -> owners a probe found alive, not closed since
        self._closed: set[str] = set()  # owners whose close or removal was read: never remembered alive
        self._era = 0  # bumped whenever owners are forgotten without their close being read
        self._thread = threading.Thread(target=self._run, name="moot-file-inotify", daemon=True)
        self._thread.start()

    def _close_fds(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)

    def _add_watch(self, path: str) -> int:
        return _check_call(_libc().inotify_add_watch(self._fd, os.fsencode(path), _MASK))

    def _watch_sessions(self, sessions: str) -> int:
        """The wd of the sessions directory ``sessions``, watched from now on. Caller holds the lock."""
        swd = self._session_wds.get(sessions)
        if swd is None:
            swd = self._session_wds[sessions] = self._add_watch(sessions)
            self._sessions[swd] = sessions
            self._spots.setdefault(swd, _Spot(swd))
        return swd

    def add(self, path: str, name: str | None, watch: CallbackWatch, dispatcher: Dispatcher, sessions: str) -> int:
        """Watch ``name`` in the directory ``path`` (any key file there if
        None) of a root whose sessions directory is ``sessions``."""
        with self._lock:
            swd = self._watch_sessions(sessions)
            wd = self._add_watch(path)
            spot = self._spots.setdefault(wd, _Spot(swd))
            if name is None:
                if not spot.any:  # a slot's changes are writes to .lock, not changes of names
                    record = _check_call(_libc().inotify_add_watch(self._fd, os.fsencode(f"{path}/.lock"),
                                                                   _IN_MODIFY))
                    self._records[record] = wd
                spot.any.add((watch, dispatcher))
                return wd
            named = _Named((watch, dispatcher), f"{path}/{name}", swd)
            spot.names.setdefault(name, set()).add(named)
            dead = wd not in self._sessions and self._follow(named)
        if dead:
            dispatcher.fire(watch)
        return wd

    def _follow(self, named: _Named) -> bool:
        """Read the owner of ``named``'s key again and follow its session;
        True if that session is already gone. Caller holds the lock."""
        owner = owner_of(named.path)
        if owner != named.owner:
            self._unfollow(named)
            named.owner = owner
            if owner is not None:
                self._owned.setdefault((named.sessions, owner), set()).add(named)
        if owner is None:
            return False
        sessions = self._sessions.get(named.sessions)
        return sessions is None or not SESSION_RE.match(owner) or not _locked(f"{sessions}/{owner}")

    def _unfollow(self, named: _Named) -> None:
        if named.owner is None:
            return
        key = (named.sessions, named.owner)
        followers = self._owned.get(key)
        if followers is not None:
            followers.discard(named)
            if not followers:
                del self._owned[key]
        named.owner = None

    def remove(self, wd: int, name: str | None, watch: CallbackWatch) -> None:
        with self._lock:
            spot = self._spots.get(wd)
            if spot is None:
                return
            if name is None:
                for target in [t for t in spot.any if t[0] is watch]:
                    spot.any.discard(target)
                if not spot.any:
                    for record in [r for r, directory in self._records.items() if directory == wd]:
                        del self._records[record]
                        _libc().inotify_rm_watch(self._fd, record)
            else:
                named = spot.names.get(name, set())
                for gone in [n for n in named if n.target[0] is watch]:
                    named.discard(gone)
                    self._unfollow(gone)
                if not named:
                    spot.names.pop(name, None)
            if not spot.any and not spot.names and wd not in self._sessions:
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
            with self._lock:  # held from the read to the routing: see known_alive
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                fire = self._route(data)
            for watch, dispatcher in fire:
                dispatcher.fire(watch)

    def _route(self, data: bytes) -> set[_Target]:
        """The watches that a batch of inotify events concerns now (those
        woken by a closed session whose flock lingers are woken later).
        Caller holds the lock."""
        fire: set[_Target] = set()
        follow: set[_Named] = set()
        closed: list[tuple[int, str]] = []
        offset = 0
        while offset < len(data):
            wd, mask, _, size = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size:offset + _EVENT.size + size]
            offset += _EVENT.size + size
            if mask & _IN_Q_OVERFLOW:
                for spot in self._spots.values():
                    fire.update(spot.everything())
                self._alive.clear()  # closes may have been lost
                self._era += 1
                continue
            directory = self._records.get(wd)
            if directory is not None:
                if mask & _IN_IGNORED:
                    del self._records[wd]
                elif directory in self._spots:
                    fire.update(self._spots[directory].any)
                continue
            found = self._spots.get(wd)
            if found is None:
                continue
            spot = found
            if mask & _IN_IGNORED:  # the directory is gone: nothing more will come from it
                fire.update(spot.everything())
                for named in spot.names.values():
                    for one in named:
                        self._unfollow(one)
                del self._spots[wd]
                gone = self._sessions.pop(wd, None)
                if gone is not None:
                    self._session_wds.pop(gone, None)
                    self._alive.pop(wd, None)
                    self._era += 1
                continue
            name = raw.split(b"\0", 1)[0].decode(errors="replace")
            named = spot.names.get(name, set())
            fire.update(n.target for n in named)
            if wd in self._sessions:
                if SESSION_RE.match(name):
                    if mask & _IN_CLOSE_WRITE:  # an owner closed or died
                        closed.append((wd, name))
                    if mask & (_IN_CLOSE_WRITE | _IN_DELETE | _IN_MOVED_FROM):
                        self._forget(wd, name)
                continue
            follow.update(named)
            if name[:1] != "." and "." not in name:  # a key file, not a subdirectory
                fire.update(spot.any)
        for named_one in follow:
            if self._follow(named_one):
                fire.add(named_one.target)
        for swd, session in closed:
            if _locked(f"{self._sessions[swd]}/{session}"):
                threading.Thread(target=self._when_dropped, args=(swd, session), daemon=True,
                                 name="moot-file-inotify-drop").start()
            else:
                fire.update(self._woken_by(swd, session))
        return fire

    def known_alive(self, sessions: str) -> tuple[frozenset[str], int] | None:
        """The owners of the sessions directory ``sessions`` known alive now
        (a probe found each alive, and no close or removal of it was read
        since; every event queued before this call is read first), and the
        era to pass to :meth:`remember_alive`. None if the events could not
        be caught up with: then probe every owner."""
        fire: set[_Target] = set()
        known: tuple[frozenset[str], int] | None = None
        with self._lock:
            try:
                swd = self._watch_sessions(sessions)
                for _ in range(_CATCH_UP):
                    if not self._pending():
                        known = frozenset(self._alive.get(swd, ())), self._era
                        break
                    fire |= self._route(os.read(self._fd, 65536))
            except OSError:  # no more inotify watches, say: the listing probes every owner
                known = None
        for watch, dispatcher in fire:
            dispatcher.fire(watch)
        return known

    def remember_alive(self, sessions: str, owners: Iterable[str], era: int) -> None:
        """Remember ``owners`` of the sessions directory ``sessions`` alive,
        as probes found them since :meth:`known_alive` gave ``era``; not
        those whose close or removal was read meanwhile."""
        with self._lock:
            swd = self._session_wds.get(sessions)
            if swd is None or era != self._era:
                return
            alive = self._alive.setdefault(swd, set())
            alive.update(owner for owner in owners if owner not in self._closed)
            if len(alive) > _MAX_KNOWN:
                alive.clear()  # forgetting an owner alive is always safe: it is probed again

    def _forget(self, swd: int, owner: str) -> None:
        """``owner``'s close or removal was read. Caller holds the lock."""
        alive = self._alive.get(swd)
        if alive is not None:
            alive.discard(owner)
        self._closed.add(owner)
        if len(self._closed) > _MAX_KNOWN:
            self._closed.clear()
            self._alive.clear()
            self._era += 1  # a remember_alive in flight could name an owner whose close is forgotten

    def _pending(self) -> bool:
        """Whether events are queued on the inotify instance, not yet read."""
        queued: int = struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        return queued > 0

    def _woken_by(self, swd: int, session: str) -> set[_Target]:
        """The watches to wake once ``session`` (of sessions directory ``swd``)
        ended: those on its keys, and those on prefixes of that root. Caller
        holds the lock."""
        woken = {named.target for named in self._owned.get((swd, session), ())}
        for spot in self._spots.values():
            if spot.sessions == swd:
                woken.update(spot.any)
        return woken

    def _when_dropped(self, swd: int, session: str) -> None:
        """Wake the watches of ``session`` once its flock is dropped (at most
        _DROP_BOUND seconds after its file was closed)."""
        path = f"{self._sessions.get(swd, '')}/{session}"
        wait, waited = 0.0001, 0.0
        while waited < _DROP_BOUND and _locked(path):
            pause(wait)
            waited += wait
            wait = min(wait * 2, 0.05)
        with self._lock:
            woken = self._woken_by(swd, session)
        for watch, dispatcher in woken:
            dispatcher.fire(watch)

    @classmethod
    def after_fork_in_child(cls) -> None:
        """Forget the parent's instance: close this process's copies of its
        descriptors (its reader thread did not survive the fork)."""
        watcher, cls._current = cls._current, None
        cls._guard = threading.Lock()
        if watcher is not None:
            watcher._close_fds()
