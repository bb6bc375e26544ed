"""The file:// backend's primitives (:class:`FileBackend`): the protocol of
:mod:`moot.backends.base` over the directories and session files of this
package; its guarantees are stated in :mod:`moot.backends.file`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import getpass
import logging
import os
import shlex
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from moot.backends._support import fork
from moot.backends.base import Backend, CallbackWatch, Dispatcher, Entry, Watch
from moot.backends.file import slot
from moot.backends.file.access import Access, check_directory, default_directory, parse_mode
from moot.backends.file.dirs import Dir, Dirs, live_names, reap, scan, subdir_prefixes
from moot.backends.file.format import (
    EPHEMERAL,
    EVICTED,
    SEQUENTIAL,
    SESSION_RE,
    count_keys,
    entry_data,
    key_path,
    load,
    next_counter,
    prefix_path,
    probe,
    store,
)
from moot.backends.file.inotify import Inotify
from moot.backends.file.sessions import Session, Sessions, evict_in
from moot.backends.file.spares import Spares
from moot.errors import ConfigurationError, ConnectionLost, CoordinatorClosed, InvalidURL
from moot.realthreads import threading
from moot.url import BackendURL

log = logging.getLogger("moot.backends.file")

#: OS errors that may pass by themselves (a full disk, too many open files): retryable ConnectionLost.
#: Any other error opening the directory (no permission, read-only file system, not a directory...)
#: is a ConfigurationError: retrying cannot help.
_TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO,
                        errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE})


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name for this uid
        return str(os.getuid())

#: Queue prefixes whose parse a backend object keeps (forgotten all at once past this).
_PREFIXES = 256

_P = ParamSpec("_P")
_R = TypeVar("_R")


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


class FileBackend(Backend):
    """Primitives over a directory shared by the processes of one host."""

    kept_alive_by_client = True  # a session is its process's flock
    reads_deadline = False  # flock and local file I/O
    OPTIONS = frozenset({"mode"})

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        self._mode = parse_mode(options)
        self._access = Access(self._mode)
        self._root = url.path
        self._lock = threading.Lock()
        self._closed = False
        self._abandoned = False
        self._dirs = Dirs(url.path, self._access)
        self._spares = Spares(self._dirs)
        self._owned = self._spares.owned  # dir -> key file name -> spare it links
        self._session: Session | None = None
        self._sessions = Sessions(self._access)
        self._watches: set[CallbackWatch] = set()
        self._dispatcher: Dispatcher | None = None
        self._watcher: Inotify | None = None
        self._prefixes: dict[str, tuple[str, str]] = {}  # valid queue prefixes -> prefix_path()
        self._slots = slot.Slots(self._access.create)

    # -- lifecycle --------------------------------------------------------
    def connect(self, timeout: float) -> None:
        host = self.url.hosts[0][0] if self.url.hosts else ""
        if host not in ("", "localhost") or not os.path.isabs(self.url.path):
            raise InvalidURL(f"{self.url.redacted()!r}: write file:///absolute/path/to/dir (three slashes)")
        self._root = self._dirs.root = os.path.normpath(self.url.path)
        try:
            self._make_root()
            check_directory(self._root, self._mode, default=self._root == os.path.normpath(default_directory()))
            self._sessions.open(self._root)
            self._dirs.sessions = self._sessions.fd
            with self._lock:
                self._dirs.get("", create=True)
            self._watcher = Inotify.acquire()
        except OSError as exc:
            self.close()
            if exc.errno in _TRANSIENT:
                raise ConnectionLost(f"cannot use {self._root!r} as a file backend: {exc.strerror or exc}") from exc
            raise ConfigurationError(
                f"cannot use {self._root!r} as a file backend: {exc.strerror or exc}"
                f"{f' ({exc.filename})' if exc.filename and exc.filename != self._root else ''}; the directory "
                f"must exist or be creatable, and be writable by this user ({_user()}): choose another path "
                f"in the URL, or create it with: mkdir -p {shlex.quote(self._root)} && chown {_user()} "
                f"{shlex.quote(self._root)}") from None
        self._dispatcher = Dispatcher("moot-file-watch")
        fork.track(self)

    def _make_root(self) -> None:
        """Create the directory (not its parents) at the chosen mode unless it exists."""
        try:
            self._access.mkdir(self._root)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self._root), exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self._access.mkdir(self._root)

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
            self._dirs.close()
            self._sessions.close()
        fork.untrack(self)
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
        fds = self._spares.fds() + self._dirs.fds()
        if self._session is not None:
            fds.append(self._session.fd)
        for fd in [*fds, self._sessions.fd]:
            with contextlib.suppress(OSError):
                os.close(fd)

    @_io
    def ping(self) -> str:
        os.stat(self._root)
        return f"file backend at {self._root}"

    # -- entries (callers hold the directory's mutex) ----------------------
    def _mine(self) -> str | None:
        """This object's live session (its keys need no liveness check)."""
        session = self._session
        return session.id if session is not None and not session.evicted else None

    # -- session ----------------------------------------------------------
    @_io
    def open_session(self, ttl: float) -> str:
        self.close_session()
        with self._lock:
            session = self._sessions.new(ttl)
            self._session = session
        session.watch = self._watch_name(self._sessions.path, session.id + EVICTED, self._session_lost)
        return session.id

    @_io
    def refresh_session(self) -> None:
        with self._lock:
            self._sessions.refresh(self._session)

    def close_session(self) -> None:
        if self._closed:
            return
        with self._lock:
            session, self._session = self._session, None
            slots = self._slots.forget_all()
            if session is None:
                return
            try:
                for rel, tail in slots:  # my slot entries: emptied, not left dead
                    handle = self._dirs.get(rel, create=False)
                    if handle is not None:
                        self._slots.release(handle, tail)
                self._spares.end_session()
                self._sessions.remove(session)
            except OSError:
                log.debug("cleaning up session files failed", exc_info=True)
            finally:
                os.close(session.fd)
        if session.watch is not None:
            session.watch.cancel()

    @_io
    def expire_session(self, session_id: str) -> bool:
        if not isinstance(session_id, str) or not SESSION_RE.match(session_id):
            return False
        with self._lock:
            listed = self._sessions.mark_evicted(session_id)
            if listed is None:
                return False
            for rel in listed:
                handle = self._dirs.get(rel, create=False)
                if handle is not None:
                    evict_in(handle, session_id)
            return True

    @_io
    def session_last_seen(self, session_id: str) -> float | None:
        if not isinstance(session_id, str) or not SESSION_RE.match(session_id):
            return None
        return self._sessions.last_seen(session_id)

    # -- keys -------------------------------------------------------------
    @_io
    def get(self, key: str) -> Entry | None:
        rel, _, name = key_path(key)
        with self._lock:
            handle = self._dirs.get(rel, create=False)
            if handle is None:
                return None
            with handle.shared:
                entry, dead = probe(handle.fd, handle.rel, name, handle.sessions, self._mine())
                if entry is None and not dead:
                    entry, dead = slot.probe(handle, name, self._mine())
                    if dead:
                        name = slot.DEAD_SLOT  # what reap() empties the slot by
            if dead:
                reap(handle, [name])
            return entry

    @_io
    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        rel, segment, _ = key_path(key)
        with self._lock:
            handle = self._dirs.get(rel, create=True)
            assert handle is not None
            with handle.exclusive:
                self._slots.settle(handle)
                return self._spares.put(handle, segment, bytes(value), self._owner_id if ephemeral else None,
                                        self._access.create)[0]

    @_io
    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._enqueue(prefix, bytes(value), ephemeral, listing=False)[0]

    @_io
    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, list[Entry]]:
        """Create and list under one hold of the directory's mutex."""
        return self._enqueue(prefix, bytes(value), True, True)

    def _enqueue(self, prefix: str, value: bytes, ephemeral: bool, listing: bool) -> tuple[Entry, list[Entry]]:
        parsed = self._prefixes.get(prefix)  # a lock's queue is used again and again: validated once
        if parsed is None:
            parsed = prefix_path(prefix)
            if len(self._prefixes) >= _PREFIXES:
                self._prefixes.clear()
            self._prefixes[prefix] = parsed
        rel, start = parsed
        out: list[Entry] = []
        with self._lock:
            handle = self._dirs.get(rel, create=True)
            assert handle is not None
            fcntl.flock(handle.lock, fcntl.LOCK_EX)  # the directory's mutex (handle.exclusive, unrolled: the hot path)
            entry: Entry | None = None
            try:
                raw = os.pread(handle.lock, slot.READ, 0)
                if slot.held(raw):  # another's entry becomes a key file to queue behind; a dead one goes
                    self._slots.settle(handle)
                    raw = os.pread(handle.lock, slot.READ, 0)
                if listing:  # alone in the directory: the entry goes in its slot (see slot.py)
                    entry = self._slots.take(handle, raw, start, value, self._owner_id)
                    if entry is not None:
                        return entry, [entry]
                while entry is None:  # a name is taken only if the counter was lost in a crash
                    entry, keys = self._spares.put(handle, start, value, self._owner_id if ephemeral else None,
                                                   self._access.create, sequential=True)
                if listing and keys == 1 and os.fstat(handle.fd).st_nlink == 2:
                    out.append(entry)  # the only key file, and no subdirectory: skip the scan
                    listing = False
                elif listing:
                    subdirs, dead, files = scan(handle, start, out, known=entry)
                    count_keys(handle.lock, exact=files)
            finally:
                fcntl.flock(handle.lock, fcntl.LOCK_UN)
            if listing:
                self._finish_list(handle, subdirs, dead, start, out)
        return entry, out

    def _owner_id(self, handle: Dir, epoch: int) -> str:
        return self._sessions.owner(self._session, handle, epoch).id

    @_io
    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        rel, segment, name = key_path(key)
        value = bytes(value)
        with self._lock:
            handle = self._dirs.get(rel, create=False)
            if handle is None:
                return None
            with handle.exclusive:
                self._slots.settle(handle, name)
                old, _ = probe(handle.fd, handle.rel, name, handle.sessions, self._mine())
                if old is None or old.version != version:
                    return None
                counter, epoch, keys = load(handle.lock)
                new_version = next_counter(counter)
                store(handle.lock, new_version, epoch, keys)
                stored = segment.encode() if name != segment else b""
                flags = (EPHEMERAL if old.owner else 0) | (SEQUENTIAL if old.seq is not None else 0)
                data = entry_data(flags, stored, value, new_version, old.seq or 0, old.owner)
                # In place: an ephemeral key's inode carries its owner's flock.
                fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW, dir_fd=handle.fd)
                try:
                    os.pwrite(fd, data, 0)
                finally:
                    os.close(fd)
                return Entry(key, value, new_version, old.seq, old.owner)

    @_io
    def delete(self, key: str, version: int | None = None) -> bool:
        held = self._slots.forget(key, version) if isinstance(key, str) else None
        if held is not None:
            with self._lock:
                handle = self._dirs.get(held[0], create=False)
                if handle is not None and self._slots.release(handle, held[1]):
                    return True
        return self._delete(key, version)

    def _delete(self, key: str, version: int | None) -> bool:
        rel, slash, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
        rel += slash
        owned = self._owned.get(rel)
        if owned is None or name not in owned or "~" in name:  # not a key this object made: check it
            rel, _, name = key_path(key)
        with self._lock:
            handle = self._dirs.get(rel, create=False)
            if handle is None:
                return False
            fcntl.flock(handle.lock, fcntl.LOCK_EX)  # handle.exclusive, unrolled: the hot path
            try:
                spare = self._owned.get(rel, {}).get(name)
                if spare is not None and version is None and self._spares.unlink_owned(handle, name, spare):
                    return True  # the fast path: my own key, no need to read it
                self._slots.settle(handle, name)
                old, dead = probe(handle.fd, handle.rel, name, handle.sessions, self._mine())
                if dead:
                    os.unlink(name, dir_fd=handle.fd)
                    count_keys(handle.lock, -1)
                if old is None or (version is not None and old.version != version):
                    return False
                os.unlink(name, dir_fd=handle.fd)
                count_keys(handle.lock, -1)
                if spare is not None:
                    self._spares.release(handle.rel, name)
                return True
            finally:
                fcntl.flock(handle.lock, fcntl.LOCK_UN)

    def _finish_list(self, handle: Dir, subdirs: list[str], dead: list[str], start: str,
                     out: list[Entry]) -> None:
        """Reap what the scan of ``handle`` found dead, add the entries of its
        matching subdirectories (each read under its own mutex), sort ``out``."""
        if dead:
            reap(handle, dead)
        pending = subdir_prefixes(handle, subdirs, start)
        while pending:
            rel = pending.pop()
            sub = self._dirs.get(rel, create=False, cache=False)
            if sub is None:
                continue
            try:
                with sub.shared:
                    names, dead, _ = scan(sub, "", out)
                if dead:
                    reap(sub, dead)
                pending.extend(subdir_prefixes(sub, names, ""))
            finally:
                if self._dirs.cached(rel) is not sub:
                    sub.close()
        out.sort(key=lambda e: e.key)

    @_io
    def list(self, prefix: str) -> list[Entry]:
        rel, start = prefix_path(prefix)
        out: list[Entry] = []
        with self._lock:
            handle = self._dirs.get(rel, create=False)
            if handle is None:
                return out
            with handle.shared:
                subdirs, dead, _ = scan(handle, start, out)
            self._finish_list(handle, subdirs, dead, start, out)
        return out

    @_io
    def names(self, directory: str) -> builtins.list[str]:
        """The base's listing without reading the members' files: an
        ephemeral key's owner is told by the spare it links (see
        :func:`moot.backends.file.dirs.live_names`), and an owner's liveness
        is probed only if this process does not know it alive (see
        :meth:`Inotify.known_alive`), once per listing."""
        rel, start = prefix_path(directory)
        if start:  # not a directory: the base's definition
            return super().names(directory)
        watcher = self._watcher
        with self._lock:
            handle = self._dirs.get(rel, create=False)
            if handle is None:
                return []
            with handle.shared:  # known as of a moment while no key can come or go: one snapshot
                known = watcher.known_alive(self._sessions.path) if watcher is not None else None
                live, dead, probed = live_names(handle, self._mine(), known[0] if known else frozenset())
            if dead:
                reap(handle, dead)
        if known is not None and probed and watcher is not None:
            watcher.remember_alive(self._sessions.path, probed, known[1])
        live.sort()
        return live

    # -- watches ----------------------------------------------------------
    @_io
    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        if key.endswith("/") or key == "":
            rel, _ = prefix_path(key)
            name = None
        else:
            rel, _, name = key_path(key)
        with self._lock:
            handle = self._dirs.get(rel, create=True)
            assert handle is not None
            path = handle.path
            held = slot.read(handle.lock) if name is not None else None
            if held is not None and held.name == name:
                # A key held in a slot becomes its file first: its removal is then an event on its name.
                # (Read without the mutex: once seen, a key only leaves the slot, never comes back.)
                with handle.exclusive:
                    self._slots.settle(handle, name)
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
        wd = watcher.add(path, name, watch, dispatcher, self._sessions.path)
        self._watches.add(watch)
        return watch


#: A forked child forgets the parent's inotify instance (its backends: :mod:`moot.backends._support.fork`).
os.register_at_fork(after_in_child=Inotify.after_fork_in_child)
