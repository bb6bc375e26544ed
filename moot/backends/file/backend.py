"""``file:///path/to/dir``: processes on one host coordinate through a directory.

No server: the directory is the engine. It is created (mode 0700) if missing.

Guarantees
    * A process that dies, even by SIGKILL, loses its ephemeral keys (locks,
      memberships) at once: the kernel drops its flocks, and watchers of
      those keys are woken by that, not by polling.
    * ``seq`` (and every key's version) comes from a counter per directory that
      is written on every use, so it keeps increasing across restarts of every
      process. It is not fsync'ed, so a machine crash may lose the last
      increments; each new value is therefore also at least the clock in
      microseconds, which keeps seqs growing across a crash as long as the
      clock is not stepped back by more than the crash and reboot took.
    * Several backend objects in one process behave like separate processes
      (each opens its own files, and flocks belong to open files), and a
      child made by ``fork()`` drops its copies of its parent's files at once,
      so it never keeps its parent's keys alive.
    * Session TTLs are recorded but liveness is the owner process itself: a
      live process whose heartbeat stalled keeps its keys until it dies or is
      evicted with :meth:`FileBackend.expire_session`.

Layout (names on disk are internal; use the API or the ``moot`` CLI)
    ``root/.lock``, ``dir/.lock``
        Per-directory mutex (``flock``: exclusive for writes, shared for
        reads, so nobody reads a half-written value) and a 40-byte record:
        the directory's counter (versions and seqs), its eviction epoch, and
        an upper bound on its number of key files (raised before a key is
        made, lowered after one is removed) with the boot id it was written
        in. When the bound is 1 right after ``enqueue`` made its key, and the
        directory has no subdirectory, the queue is that key alone: the
        uncontended lock skips reading the directory. A bound from another
        boot is ignored (unsynced writes may be lost in a machine crash).
    ``<segment>.d/``
        One directory per inner key segment. The suffix keeps a key ``a/b``
        and a key ``a/b/c`` apart. A segment longer than 200 characters is
        stored as its first 100 characters, ``~`` and its SHA-256; the full
        segment is kept in the key's header (files) or in ``.name`` (dirs).
    ``<segment>``
        One file per key: a 60-byte header (version, seq, owner session,
        value length), the full segment if hashed, then the value.
    ``.s-<random>``
        A *spare*: a file that one backend object keeps open with an exclusive
        ``flock``. An ephemeral key is a hard link to a spare, so the key
        lives exactly as long as that ``flock``. Deleting a key unlinks only
        its name; the spare (inode, open file, lock) is reused by the next
        ephemeral key in that directory. Why: on ext4, allocating and freeing
        an inode costs ~50 us, a link plus an unlink ~8 us; an uncontended
        lock acquire plus release is 13 system calls and no inode. A
        reader tells a live key from a dead one with ``LOCK_SH|LOCK_NB``.
    ``.sessions/<id>``
        One file per session, flocked by its owner (alive while flocked; the
        heartbeat touches its mtime), listing the directories where it made
        ephemeral keys. ``<id>.evicted`` marks an evicted session.

Dead entries (their owner died) are treated as absent and removed lazily
under the mutex. Watches use one inotify instance and one reader thread per
process, shared by every backend object (a user gets only 128 instances by
default). A dying process closes its spares, which inotify reports as
``IN_CLOSE_WRITE`` of the spare's name: that wakes every watch on the
directory (deaths are rare; wake-ups may be spurious).
Eviction writes the marker, then deletes the session's keys in the
directories it listed, bumping each directory's epoch; an owner that sees
an epoch change checks its marker before making a new key there, so an
evicted session cannot add keys behind the evicter's back.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import struct
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from moot.backends.base import Backend, CallbackWatch, Dispatcher, Entry, Watch
from moot.errors import ConnectionLost, CoordinatorClosed, InvalidArgument, InvalidURL, SessionExpired
from moot.realthreads import select, threading
from moot.url import BackendURL

log = logging.getLogger("moot.backends.file")

_SEGMENT = r"[A-Za-z0-9_%-]+"
_KEY_RE = re.compile(rf"(?:{_SEGMENT}/)*{_SEGMENT}\Z")
_PREFIX_RE = re.compile(rf"(?:{_SEGMENT}/)*[A-Za-z0-9_%-]*\Z")
_SESSION_RE = re.compile(r"[0-9a-f]{32}\Z")
_MAX_SEGMENT = 200  # longer segments are stored under a hashed name
_KEPT = 100  # characters of a long segment kept readable in its hashed name

_MAGIC = b"moot"
# magic, format, flags, stored segment length, value length, version, seq, owner
_HEADER = struct.Struct("<4sBBHIQq32s")
_EPHEMERAL, _SEQUENTIAL = 1, 2
# A directory's record: its counter, eviction epoch, an upper bound on its
# number of key files and the boot that bound was written in (a machine crash
# may lose unsynced writes, so a bound from another boot is not trusted).
_RECORD = struct.Struct("<QQQ16s")
_READ = 4096

_MAX_DIRS = 32  # directory handles kept open per backend object (2 fds each)
_MAX_FREE = 32  # unused spares kept open per backend object
_SPARE = ".s-"
_EVICTED = ".evicted"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _next(counter: int) -> int:
    """The directory's next counter value: above the last one, and never below
    the clock in microseconds, so that seqs keep growing even if a machine
    crash lost the last (unsynced) writes of the counter, unless the clock
    was stepped back by more than the crash and reboot took."""
    return max(counter + 1, time.time_ns() // 1000)


def _disk(segment: str) -> str:
    """The file name of one key segment."""
    if len(segment) <= _MAX_SEGMENT:
        return segment
    return f"{segment[:_KEPT]}~{hashlib.sha256(segment.encode()).hexdigest()}"


def _split(key: str) -> tuple[str, str]:
    """``'a/b/c'`` -> ``('a/b/', 'c')``: the directory's key prefix and the last segment."""
    rel, slash, segment = key.rpartition("/")
    return rel + slash, segment


def _check(key: str, pattern: re.Pattern[str], what: str) -> None:
    if not isinstance(key, str) or not pattern.match(key):
        raise InvalidArgument(f"bad {what} {key!r}: '/'-separated segments of [A-Za-z0-9_%-]")


@functools.cache
def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as text:
            return uuid.UUID(text.read().strip()).bytes
    except (OSError, ValueError):
        return uuid.uuid4().bytes  # then only this process trusts its own bounds


def _alive(fd: int) -> bool:
    """True if another open file holds an exclusive flock on ``fd``'s file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def _read_all(fd: int, data: bytes, size: int) -> bytes:
    """``data`` (read from offset 0) completed to ``size`` bytes if the file has them."""
    while len(data) < size:
        more = os.pread(fd, size - len(data), len(data))
        if not more:
            break
        data += more
    return data


def _io(method: Callable[Concatenate[FileBackend, _P], _R]) -> Callable[Concatenate[FileBackend, _P], _R]:
    """Report an unexpected OS error as ConnectionLost; refuse a closed backend."""

    def wrapper(self: FileBackend, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._closed:
            raise CoordinatorClosed("this file backend is closed")
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise ConnectionLost(f"file backend at {self._root!r}: {exc.strerror or exc}") from exc

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class _Dir:
    """Open handles on one directory of the tree: the directory and its ``.lock``."""

    __slots__ = ("fd", "lock", "path", "rel")

    def __init__(self, rel: str, path: str, fd: int, lock: int):
        self.rel, self.path, self.fd, self.lock = rel, path, fd, lock

    def close(self) -> None:
        os.close(self.lock)
        os.close(self.fd)


class _Spare:
    """A file this backend keeps open and flocked; ephemeral keys link to it."""

    __slots__ = ("fd", "name")

    def __init__(self, fd: int, name: str):
        self.fd, self.name = fd, name


class _Session:
    __slots__ = ("dirs", "evicted", "fd", "id", "watch")

    def __init__(self, session_id: str, fd: int):
        self.id, self.fd = session_id, fd
        self.dirs: dict[str, int] = {}  # directories listed in the session file -> epoch seen
        self.evicted = False
        self.watch: Watch | None = None


class FileBackend(Backend):
    """Primitives over a directory shared by the processes of one host."""

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        self._root = url.path
        self._lock = threading.Lock()
        self._closed = False
        self._abandoned = False
        self._dirs: collections.OrderedDict[str, _Dir] = collections.OrderedDict()
        self._owned: dict[str, dict[str, _Spare]] = {}  # dir -> key file name -> spare it links
        self._free: dict[str, list[_Spare]] = {}
        self._free_count = 0
        self._swept: set[str] = set()
        self._session: _Session | None = None
        self._sessions_fd = -1
        self._watches: set[CallbackWatch] = set()
        self._dispatcher: Dispatcher | None = None
        self._watcher: _Inotify | None = None

    # -- lifecycle --------------------------------------------------------
    def connect(self, timeout: float) -> None:
        host = self.url.hosts[0][0] if self.url.hosts else ""
        if host not in ("", "localhost") or not os.path.isabs(self.url.path):
            raise InvalidURL(f"{self.url.redacted()!r}: write file:///absolute/path/to/dir (three slashes)")
        self._root = os.path.normpath(self.url.path)
        try:
            os.makedirs(self._root, mode=0o700, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.join(self._root, ".sessions"), 0o700)
            self._sessions_fd = os.open(os.path.join(self._root, ".sessions"), os.O_RDONLY | os.O_DIRECTORY)
            with self._lock:
                self._dir("", create=True)
            self._watcher = _Inotify.acquire()
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"cannot use {self._root!r} as a file backend: {exc.strerror or exc}") from exc
        self._dispatcher = Dispatcher("moot-file-watch")
        _LIVE.add(self)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.close_session()
        except Exception:
            log.debug("closing the session failed", exc_info=True)
        for watch in list(self._watches):
            watch.cancel()
        with self._lock:
            self._closed = True
            for rel, spares in self._free.items():
                for spare in spares:
                    self._drop_spare(rel, spare)
            self._free.clear()
            for handle in self._dirs.values():
                handle.close()
            self._dirs.clear()
            if self._sessions_fd >= 0:
                os.close(self._sessions_fd)
        _LIVE.discard(self)
        if self._dispatcher is not None:
            self._dispatcher.close()
        if self._watcher is not None:
            self._watcher.release()
            self._watcher = None

    def forget_after_fork(self) -> None:
        self._abandon()

    def _abandon(self) -> None:
        """In a forked child: close this process's copies of every file, so the
        parent's keys die with the parent (never unlock: the child shares the
        parent's open files, so an unlock would free the parent's locks).
        Takes no lock (a parent thread may have held it at fork time). Runs
        once: a second call must not close descriptors reused since."""
        if self._abandoned:
            return
        self._abandoned = True
        self._closed = True
        spares = [s for owned in self._owned.values() for s in owned.values()]
        spares += [s for free in self._free.values() for s in free]
        fds = [s.fd for s in spares] + [h.fd for h in self._dirs.values()] + [h.lock for h in self._dirs.values()]
        if self._session is not None:
            fds.append(self._session.fd)
        for fd in [*fds, self._sessions_fd]:
            with contextlib.suppress(OSError):
                os.close(fd)

    @_io
    def ping(self) -> str:
        os.stat(self._root)
        return f"file backend at {self._root}"

    # -- directories ------------------------------------------------------
    def _path(self, rel: str) -> str:
        return self._root + "".join(f"/{_disk(s)}.d" for s in rel.split("/")[:-1])

    def _dir(self, rel: str, create: bool, cache: bool = True) -> _Dir | None:
        """Handles on the directory of key prefix ``rel`` (``''`` or ending in
        ``/``); None if it does not exist and ``create`` is False. With
        ``cache`` False, a handle that is not cached is returned uncached: the
        caller closes it."""
        handle = self._dirs.get(rel)
        if handle is not None:
            self._dirs.move_to_end(rel)
            return handle
        path = self._path(rel)
        if create and "~" in path[len(self._root):]:
            self._make_dirs(rel)  # also names a hashed directory whose maker died before naming it
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if not create:
                return None
            self._make_dirs(rel)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            lock = os.open(".lock", os.O_RDWR | os.O_CREAT, 0o600, dir_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        handle = _Dir(rel, path, fd, lock)
        if not cache:
            return handle
        self._dirs[rel] = handle
        if len(self._dirs) > _MAX_DIRS:
            self._dirs.popitem(last=False)[1].close()
        if rel not in self._swept:
            self._swept.add(rel)
            self._sweep(handle)
        return handle

    def _make_dirs(self, rel: str) -> None:
        path = self._root
        for segment in rel.split("/")[:-1]:
            name = _disk(segment)
            path = f"{path}/{name}.d"
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
            if name != segment and not os.path.exists(f"{path}/.name"):
                temp = f"{path}/.name.{uuid.uuid4().hex}"
                with open(temp, "x", encoding="ascii") as out:
                    out.write(segment)
                os.replace(temp, f"{path}/.name")

    def _subdirs(self, handle: _Dir, names: list[str], start: str) -> list[str]:
        """Key prefixes of the subdirectories ``names`` of ``handle`` whose
        segment starts with ``start``."""
        found = []
        for name in names:
            segment = name[:-2]
            if "~" in segment:
                try:
                    with open(f"{handle.path}/{name}/.name", encoding="ascii") as text:
                        segment = text.read()
                except FileNotFoundError:
                    continue  # still being made; it holds no key yet
            if segment.startswith(start):
                found.append(f"{handle.rel}{segment}/")
        return found

    # -- entries (callers hold the directory's mutex) ----------------------
    def _probe(self, handle: _Dir, name: str) -> tuple[Entry | None, bool]:
        """(the live entry stored as ``name`` or None, whether a dead entry is there)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=handle.fd)
        except FileNotFoundError:
            return None, False
        try:
            data = os.read(fd, _READ)
            if len(data) < _HEADER.size:
                return None, True  # a crash while it was being written
            magic, _, flags, stored, size, version, seq, owner = _HEADER.unpack_from(data)
            end = _HEADER.size + stored + size
            if magic != _MAGIC:
                return None, True
            if end > len(data):
                data = _read_all(fd, data, end)
                if end > len(data):
                    return None, True
            if flags & _EPHEMERAL and not _alive(fd):
                return None, True
        finally:
            os.close(fd)
        segment = data[_HEADER.size:_HEADER.size + stored].decode() if stored else name
        return Entry(
            handle.rel + segment,
            data[_HEADER.size + stored:end],
            version,
            seq if flags & _SEQUENTIAL else None,
            owner.decode() if flags & _EPHEMERAL else None,
        ), False

    def _scan(self, handle: _Dir, start: str, out: list[Entry], known: Entry | None = None) -> tuple[
            list[str], list[str], int]:
        """Append the live entries of ``handle`` whose segment starts with
        ``start`` to ``out``; return (subdirectory names, dead entry names,
        number of key files)."""
        subdirs: list[str] = []
        dead: list[str] = []
        files = 0
        known_name = _disk(_split(known.key)[1]) if known is not None else None
        for name in os.listdir(handle.fd):
            if name[0] == ".":
                continue
            if name.endswith(".d"):
                subdirs.append(name)
                continue
            files += 1
            if name == known_name and known is not None:
                out.append(known)
                continue
            if start and "~" not in name and not name.startswith(start):
                continue
            entry, is_dead = self._probe(handle, name)
            if is_dead:
                dead.append(name)
            elif entry is not None and entry.key.startswith(start, len(handle.rel)):
                out.append(entry)
        return subdirs, dead, files

    @staticmethod
    def _load(handle: _Dir) -> tuple[int, int, int | None]:
        """The directory's (counter, eviction epoch, bound on key files or None if unknown)."""
        raw = os.pread(handle.lock, _RECORD.size, 0)
        if len(raw) < _RECORD.size:
            return 0, 0, None
        counter, epoch, keys, boot = _RECORD.unpack(raw)
        return counter, epoch, keys if boot == _boot_id() else None

    @staticmethod
    def _store(handle: _Dir, counter: int, epoch: int, keys: int | None) -> None:
        boot = bytes(_RECORD.size - 24) if keys is None else _boot_id()
        os.pwrite(handle.lock, _RECORD.pack(counter, epoch, max(keys or 0, 0), boot), 0)

    def _count_keys(self, handle: _Dir, delta: int = 0, exact: int | None = None) -> None:
        """Lower the directory's bound on key files by ``-delta`` after
        unlinks (only after them: it must stay an upper bound), or set it to
        ``exact`` after a full scan under the exclusive mutex."""
        counter, epoch, keys = self._load(handle)
        self._store(handle, counter, epoch, exact if exact is not None else None if keys is None else keys + delta)

    def _owner(self, handle: _Dir, epoch: int) -> _Session:
        """The live session that a new ephemeral key in ``handle`` belongs to.

        The directory is listed in the session file before the first key is
        made there, and the eviction marker is checked whenever the
        directory's eviction epoch moved (see the module docstring)."""
        session = self._session
        if session is None or session.evicted:
            raise SessionExpired("no live session; ephemeral keys need one")
        seen = session.dirs.get(handle.rel)
        if seen != epoch:
            if seen is None:
                os.write(session.fd, f"{handle.rel}\n".encode())
            if self._is_evicted(session.id):
                session.evicted = True
                raise SessionExpired("this session was evicted")
            session.dirs[handle.rel] = epoch
        return session

    def _put(self, handle: _Dir, segment: str, value: bytes, ephemeral: bool, sequential: bool = False) -> \
            tuple[Entry | None, int | None]:
        """Create the key ``segment`` (``segment`` + seq if ``sequential``) in
        ``handle`` if absent (a dead entry is replaced); None if a live one is
        there. Also returns the directory's bound on key files (None if
        unknown). Caller holds the mutex."""
        counter, epoch, keys = self._load(handle)
        version = _next(counter)
        keys = None if keys is None else keys + 1
        self._store(handle, version, epoch, keys)  # before the link: the bound stays a bound
        seq = version if sequential else None
        if sequential:
            segment = f"{segment}{version:020d}"
        owner = self._owner(handle, epoch) if ephemeral else None
        name = _disk(segment)
        stored = segment.encode() if name != segment else b""
        flags = (_EPHEMERAL if owner else 0) | (_SEQUENTIAL if seq is not None else 0)
        data = _HEADER.pack(_MAGIC, 1, flags, len(stored), len(value), version, seq or 0,
                            owner.id.encode() if owner else b"") + stored + value
        entry = Entry(handle.rel + segment, value, version, seq, owner.id if owner else None)
        spare = self._take_spare(handle) if owner else None
        linked = False
        try:
            if spare is not None:
                os.pwrite(spare.fd, data, 0)
            for _ in range(2):
                try:
                    if spare is None:
                        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=handle.fd)
                        try:
                            os.write(fd, data)
                        finally:
                            os.close(fd)
                    else:
                        os.link(spare.name, name, src_dir_fd=handle.fd, dst_dir_fd=handle.fd,
                                follow_symlinks=False)
                        linked = True
                        self._owned.setdefault(handle.rel, {})[name] = spare
                    return entry, keys
                except FileExistsError:
                    if not self._probe(handle, name)[1]:
                        break
                    os.unlink(name, dir_fd=handle.fd)  # a dead entry counts as absent
            return None, keys
        finally:
            if spare is not None and not linked:
                self._give_back(handle.rel, spare)

    # -- spares -----------------------------------------------------------
    def _take_spare(self, handle: _Dir) -> _Spare:
        free = self._free.get(handle.rel)
        if not free:
            self._reclaim(handle.rel)
            free = self._free.get(handle.rel)
        if free:
            self._free_count -= 1
            return free.pop()
        name = f"{_SPARE}{uuid.uuid4().hex}"
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=handle.fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _Spare(fd, name)

    def _reclaim(self, rel: str) -> None:
        """Free the spares of keys in ``rel`` that somebody else deleted."""
        owned = self._owned.get(rel, {})
        for name, spare in list(owned.items()):
            if os.fstat(spare.fd).st_nlink < 2:
                del owned[name]
                self._give_back(rel, spare)

    def _give_back(self, rel: str, spare: _Spare) -> None:
        if self._free_count < _MAX_FREE:
            self._free.setdefault(rel, []).append(spare)
            self._free_count += 1
        else:
            self._drop_spare(rel, spare)

    def _drop_spare(self, rel: str, spare: _Spare) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._path(rel)}/{spare.name}")
        os.close(spare.fd)

    def _unlink_owned(self, handle: _Dir, name: str, spare: _Spare) -> bool:
        """Delete ``name`` if it still links ``spare``; the spare is freed either way.

        Only this object links its spares, one key name each, under the
        mutex: so a second link to the spare is ``name``, and its absence
        means somebody else deleted the key."""
        del self._owned[handle.rel][name]
        linked = os.fstat(spare.fd).st_nlink > 1
        if linked:
            os.unlink(name, dir_fd=handle.fd)
            self._count_keys(handle, -1)
        self._give_back(handle.rel, spare)
        return linked

    def _sweep(self, handle: _Dir) -> None:
        """Remove dead spares and dead entries from ``handle``."""
        fcntl.flock(handle.lock, fcntl.LOCK_EX)
        files = 0
        try:
            for name in os.listdir(handle.fd):
                if name.startswith(_SPARE):
                    try:
                        fd = os.open(name, os.O_RDONLY, dir_fd=handle.fd)
                    except FileNotFoundError:
                        continue
                    try:
                        if not _alive(fd):
                            os.unlink(name, dir_fd=handle.fd)
                    finally:
                        os.close(fd)
                elif name[0] != "." and not name.endswith(".d"):
                    if self._probe(handle, name)[1]:
                        os.unlink(name, dir_fd=handle.fd)
                    else:
                        files += 1
            self._count_keys(handle, exact=files)
        finally:
            fcntl.flock(handle.lock, fcntl.LOCK_UN)

    # -- session ----------------------------------------------------------
    def _is_evicted(self, session_id: str) -> bool:
        try:
            os.stat(session_id + _EVICTED, dir_fd=self._sessions_fd)
        except FileNotFoundError:
            return False
        return True

    @_io
    def open_session(self, ttl: float) -> str:
        self.close_session()
        session_id = uuid.uuid4().hex
        with self._lock:
            self._sweep_sessions()
            temp = f".t-{session_id}"
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600, dir_fd=self._sessions_fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            header = {"ttl": ttl, "pid": os.getpid(), "created": time.time()}
            os.write(fd, json.dumps(header).encode() + b"\n")
            os.link(temp, session_id, src_dir_fd=self._sessions_fd, dst_dir_fd=self._sessions_fd)
            os.unlink(temp, dir_fd=self._sessions_fd)
            session = _Session(session_id, fd)
            self._session = session
        session.watch = self._watch_name(os.path.join(self._root, ".sessions"), session_id + _EVICTED,
                                         self._session_lost)
        return session_id

    def _sweep_sessions(self) -> None:
        """Remove the files of dead sessions and markers left without a session."""
        names = os.listdir(self._sessions_fd)
        for name in names:
            if name[0] == "." or name.endswith(_EVICTED):
                continue
            try:
                fd = os.open(name, os.O_RDONLY, dir_fd=self._sessions_fd)
            except FileNotFoundError:
                continue
            try:
                if not _alive(fd):
                    os.unlink(name, dir_fd=self._sessions_fd)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        for name in names:
            if name.endswith(_EVICTED) and not os.path.exists(f"{self._root}/.sessions/{name[:-len(_EVICTED)]}"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self._sessions_fd)

    @_io
    def refresh_session(self) -> None:
        with self._lock:
            session = self._session
            if session is None or session.evicted:
                raise SessionExpired("the file backend's session is gone")
            if self._is_evicted(session.id):
                session.evicted = True
                raise SessionExpired("this session was evicted")
            os.utime(session.fd)

    def close_session(self) -> None:
        if self._closed:
            return
        with self._lock:
            session, self._session = self._session, None
            if session is None:
                return
            try:
                for rel, owned in list(self._owned.items()):
                    handle = self._dir(rel, create=False)
                    if handle is None:
                        for spare in owned.values():
                            os.close(spare.fd)
                        owned.clear()
                        continue
                    fcntl.flock(handle.lock, fcntl.LOCK_EX)
                    try:
                        for name, spare in list(owned.items()):
                            self._unlink_owned(handle, name, spare)
                    finally:
                        fcntl.flock(handle.lock, fcntl.LOCK_UN)
                self._owned.clear()
                for name in (session.id, session.id + _EVICTED):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=self._sessions_fd)
            except OSError:
                log.debug("cleaning up session files failed", exc_info=True)
            finally:
                os.close(session.fd)
        if session.watch is not None:
            session.watch.cancel()

    @_io
    def expire_session(self, session_id: str) -> bool:
        if not isinstance(session_id, str) or not _SESSION_RE.match(session_id):
            return False
        with self._lock:
            try:
                fd = os.open(session_id, os.O_RDONLY, dir_fd=self._sessions_fd)
            except FileNotFoundError:
                return False
            try:
                if not _alive(fd):
                    return False
                try:
                    os.close(os.open(session_id + _EVICTED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600,
                                     dir_fd=self._sessions_fd))
                except FileExistsError:
                    return False
                text = _read_all(fd, b"", os.fstat(fd).st_size).decode()
            finally:
                os.close(fd)
            for rel in dict.fromkeys(text.split("\n")[1:-1]):
                if _PREFIX_RE.match(rel) and (rel == "" or rel.endswith("/")):
                    self._evict_in(rel, session_id)
            return True

    def _evict_in(self, rel: str, session_id: str) -> None:
        """Bump ``rel``'s eviction epoch and delete the session's keys there."""
        handle = self._dir(rel, create=False)
        if handle is None:
            return
        fcntl.flock(handle.lock, fcntl.LOCK_EX)
        try:
            counter, epoch, keys = self._load(handle)
            self._store(handle, counter, epoch + 1, keys)
            removed = 0
            for name in os.listdir(handle.fd):
                if name[0] != "." and not name.endswith(".d"):
                    entry, _ = self._probe(handle, name)
                    if entry is not None and entry.owner == session_id:
                        os.unlink(name, dir_fd=handle.fd)
                        removed += 1
            self._count_keys(handle, -removed)
        finally:
            fcntl.flock(handle.lock, fcntl.LOCK_UN)

    @_io
    def session_last_seen(self, session_id: str) -> float | None:
        if not isinstance(session_id, str) or not _SESSION_RE.match(session_id):
            return None
        try:
            fd = os.open(session_id, os.O_RDONLY, dir_fd=self._sessions_fd)
        except FileNotFoundError:
            return None
        try:
            if not _alive(fd) or self._is_evicted(session_id):
                return None
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)

    # -- keys -------------------------------------------------------------
    @_io
    def get(self, key: str) -> Entry | None:
        _check(key, _KEY_RE, "key")
        rel, segment = _split(key)
        with self._lock:
            handle = self._dir(rel, create=False)
            if handle is None:
                return None
            name = _disk(segment)
            fcntl.flock(handle.lock, fcntl.LOCK_SH)
            try:
                entry, dead = self._probe(handle, name)
            finally:
                fcntl.flock(handle.lock, fcntl.LOCK_UN)
            if dead:
                self._reap(handle, [name])
            return entry

    def _reap(self, handle: _Dir, names: list[str]) -> None:
        """Remove the named entries of ``handle`` that are (still) dead, and dead spares."""
        fcntl.flock(handle.lock, fcntl.LOCK_EX)
        try:
            removed = 0
            for name in names:
                if self._probe(handle, name)[1]:
                    os.unlink(name, dir_fd=handle.fd)
                    removed += 1
            self._count_keys(handle, -removed)
        finally:
            fcntl.flock(handle.lock, fcntl.LOCK_UN)
        self._sweep(handle)

    @_io
    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        _check(key, _KEY_RE, "key")
        rel, segment = _split(key)
        with self._lock:
            handle = self._dir(rel, create=True)
            assert handle is not None
            fcntl.flock(handle.lock, fcntl.LOCK_EX)
            try:
                return self._put(handle, segment, bytes(value), ephemeral)[0]
            finally:
                fcntl.flock(handle.lock, fcntl.LOCK_UN)

    @_io
    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._enqueue(prefix, bytes(value), ephemeral, listing=False)[0]

    @_io
    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, list[Entry]]:
        """Create and list under one hold of the directory's mutex."""
        return self._enqueue(prefix, bytes(value), True, listing=True)

    def _enqueue(self, prefix: str, value: bytes, ephemeral: bool, listing: bool) -> tuple[Entry, list[Entry]]:
        _check(prefix, _PREFIX_RE, "prefix")
        rel, start = _split(prefix)
        out: list[Entry] = []
        with self._lock:
            handle = self._dir(rel, create=True)
            assert handle is not None
            fcntl.flock(handle.lock, fcntl.LOCK_EX)
            try:
                entry: Entry | None = None
                while entry is None:  # a name is taken only if the counter was lost in a crash
                    entry, keys = self._put(handle, start, value, ephemeral, sequential=True)
                if listing and keys == 1 and os.fstat(handle.fd).st_nlink == 2:
                    out.append(entry)  # the only key file, and no subdirectory: skip the scan
                    listing = False
                elif listing:
                    subdirs, dead, files = self._scan(handle, start, out, known=entry)
                    self._count_keys(handle, exact=files)
            finally:
                fcntl.flock(handle.lock, fcntl.LOCK_UN)
            if listing:
                self._finish_list(handle, subdirs, dead, start, out)
        return entry, out

    @_io
    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        _check(key, _KEY_RE, "key")
        rel, segment = _split(key)
        value = bytes(value)
        with self._lock:
            handle = self._dir(rel, create=False)
            if handle is None:
                return None
            name = _disk(segment)
            fcntl.flock(handle.lock, fcntl.LOCK_EX)
            try:
                old, _ = self._probe(handle, name)
                if old is None or old.version != version:
                    return None
                counter, epoch, keys = self._load(handle)
                new_version = _next(counter)
                self._store(handle, new_version, epoch, keys)
                stored = segment.encode() if name != segment else b""
                flags = (_EPHEMERAL if old.owner else 0) | (_SEQUENTIAL if old.seq is not None else 0)
                data = _HEADER.pack(_MAGIC, 1, flags, len(stored), len(value), new_version, old.seq or 0,
                                    (old.owner or "").encode()) + stored + value
                # In place: an ephemeral key's inode carries its owner's flock.
                fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW, dir_fd=handle.fd)
                try:
                    os.pwrite(fd, data, 0)
                finally:
                    os.close(fd)
                return Entry(key, value, new_version, old.seq, old.owner)
            finally:
                fcntl.flock(handle.lock, fcntl.LOCK_UN)

    @_io
    def delete(self, key: str, version: int | None = None) -> bool:
        _check(key, _KEY_RE, "key")
        rel, segment = _split(key)
        with self._lock:
            handle = self._dir(rel, create=False)
            if handle is None:
                return False
            name = _disk(segment)
            fcntl.flock(handle.lock, fcntl.LOCK_EX)
            try:
                spare = self._owned.get(rel, {}).get(name)
                if spare is not None and version is None and self._unlink_owned(handle, name, spare):
                    return True  # the fast path: my own key, no need to read it
                old, dead = self._probe(handle, name)
                if dead:
                    os.unlink(name, dir_fd=handle.fd)
                    self._count_keys(handle, -1)
                if old is None or (version is not None and old.version != version):
                    return False
                os.unlink(name, dir_fd=handle.fd)
                self._count_keys(handle, -1)
                if spare is not None:
                    self._reclaim(rel)
                return True
            finally:
                fcntl.flock(handle.lock, fcntl.LOCK_UN)

    def _finish_list(self, handle: _Dir, subdirs: list[str], dead: list[str], start: str,
                     out: list[Entry]) -> None:
        """Reap what the scan of ``handle`` found dead, add the entries of its
        matching subdirectories (each read under its own mutex), sort ``out``."""
        if dead:
            self._reap(handle, dead)
        pending = self._subdirs(handle, subdirs, start)
        while pending:
            rel = pending.pop()
            sub = self._dir(rel, create=False, cache=False)
            if sub is None:
                continue
            try:
                fcntl.flock(sub.lock, fcntl.LOCK_SH)
                try:
                    names, dead, _ = self._scan(sub, "", out)
                finally:
                    fcntl.flock(sub.lock, fcntl.LOCK_UN)
                if dead:
                    self._reap(sub, dead)
                pending.extend(self._subdirs(sub, names, ""))
            finally:
                if self._dirs.get(rel) is not sub:
                    sub.close()
        out.sort(key=lambda e: e.key)

    @_io
    def list(self, prefix: str) -> list[Entry]:
        _check(prefix, _PREFIX_RE, "prefix")
        rel, start = _split(prefix)
        out: list[Entry] = []
        with self._lock:
            handle = self._dir(rel, create=False)
            if handle is None:
                return out
            fcntl.flock(handle.lock, fcntl.LOCK_SH)
            try:
                subdirs, dead, _ = self._scan(handle, start, out)
            finally:
                fcntl.flock(handle.lock, fcntl.LOCK_UN)
            self._finish_list(handle, subdirs, dead, start, out)
        return out

    # -- watches ----------------------------------------------------------
    @_io
    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        if key.endswith("/") or key == "":
            _check(key, _PREFIX_RE, "prefix")
            rel, name = key, None
        else:
            _check(key, _KEY_RE, "key")
            rel, segment = _split(key)
            name = _disk(segment)
        with self._lock:
            handle = self._dir(rel, create=True)
            assert handle is not None
            path = handle.path
        return self._watch_name(path, name, callback)

    def _watch_name(self, path: str, name: str | None, callback: Callable[[], None]) -> CallbackWatch:
        """Call ``callback`` on changes to ``name`` in directory ``path`` (any
        key file there if ``name`` is None)."""
        watcher, dispatcher = self._watcher, self._dispatcher
        if watcher is None or dispatcher is None:
            raise CoordinatorClosed("this file backend is not connected")

        def forget(watch: CallbackWatch) -> None:
            self._watches.discard(watch)
            watcher.remove(wd, name, watch)

        watch = CallbackWatch(callback, forget)
        wd = watcher.add(path, name, watch, dispatcher)
        self._watches.add(watch)
        return watch


# -- inotify ------------------------------------------------------------------
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


class _Inotify:
    """One inotify instance and reader thread per process, shared by every
    FileBackend in it (inotify instances are a scarce per-user resource)."""

    _current: _Inotify | None = None
    _guard = threading.Lock()

    @classmethod
    def acquire(cls) -> _Inotify:
        with cls._guard:
            if cls._current is None:
                cls._current = cls()
            cls._current._users += 1
            return cls._current

    def release(self) -> None:
        with self._guard:
            self._users -= 1
            if self._users > 0 or _Inotify._current is not self:
                return
            _Inotify._current = None
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
                if name.startswith(_SPARE) and mask & _IN_CLOSE_WRITE:  # an owner closed or died
                    fire.update(spot.everything())
                    continue
                fire.update(spot.names.get(name, ()))
                if name[:1] != "." and "." not in name:  # a key file, not a subdirectory
                    fire.update(spot.any)
        return fire


_LIVE: weakref.WeakSet[FileBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    watcher, _Inotify._current = _Inotify._current, None
    _Inotify._guard = threading.Lock()
    if watcher is not None:
        watcher._close_fds()
    for backend in list(_LIVE):
        backend._abandon()
    _LIVE.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
