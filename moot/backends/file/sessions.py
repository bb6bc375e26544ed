"""Sessions of the file:// backend: one file per session in ``.sessions.3/``,
flocked by its owner (alive while flocked; the heartbeat touches its mtime),
listing the directories where the session made ephemeral keys, and eviction.
Every ephemeral key of a session lives exactly as long as that one flock, so
a process keeps one descriptor per session, however many keys it has.

Older formats kept their session files elsewhere: format 1 in ``.sessions/``
(each ephemeral key a hard link to a flocked file of its own), format 2 in
``.sessions.2/`` (as now, but without a directory's slot, see ``slot.py``).
A process of an older format would take newer keys for dead or not see
them, so formats never share a directory: format 3 replaces each older
sessions directory by a file once no session of that format is alive
there, and an older process then fails to open it as a directory and
refuses to connect; while one is alive, a format 3 process refuses to
connect and says which process it is.

An evicted session gets a marker file; the evicter then deletes the session's
keys in the directories it listed, bumping each one's eviction epoch, and an
owner that sees an epoch change checks its marker before making a key there,
so an evicted session cannot add keys behind the evicter's back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
import uuid

from moot.backends.base import Watch
from moot.backends.file import slot
from moot.backends.file.access import Access
from moot.backends.file.dirs import Dir
from moot.backends.file.format import (
    EVICTED,
    FORMAT_2,
    LEGACY,
    PREFIX_RE,
    SESSIONS,
    alive,
    count_keys,
    load,
    probe,
    read_all,
    store,
    unlink_if_dead,
)
from moot.errors import ConfigurationError, SessionExpired

_MARKER = (b"moot file:// format 3: the session files are in .sessions.3/. A moot from before format 3 "
           b"cannot use this directory (it would not see format 3 keys as alive).\n")


class Session:
    __slots__ = ("dirs", "evicted", "fd", "id", "watch")

    def __init__(self, session_id: str, fd: int):
        self.id, self.fd = session_id, fd
        self.dirs: dict[str, int] = {}  # directories listed in the session file -> epoch seen
        self.evicted = False
        self.watch: Watch | None = None


class Sessions:
    """The ``.sessions`` directory of one backend object. Callers hold the
    backend's lock where the original call did."""

    __slots__ = ("access", "fd", "path")

    def __init__(self, access: Access) -> None:
        self.access = access
        self.fd = -1
        self.path = ""

    def open(self, root: str) -> None:
        """Open the sessions directory of ``root``, claiming ``root`` for
        format 3 first (under its mutex): see the module docstring."""
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            lock = self.access.open_or_create(".lock", os.O_RDWR, root_fd)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _claim(root, root_fd, self.access)
            finally:
                os.close(lock)
        finally:
            os.close(root_fd)
        self.path = os.path.join(root, SESSIONS)
        with contextlib.suppress(FileExistsError):
            self.access.mkdir(self.path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)

    def is_evicted(self, session_id: str) -> bool:
        try:
            os.stat(session_id + EVICTED, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def new(self, ttl: float) -> Session:
        """A new session: its file made under its own name and flocked.

        Opened under its own name (not a temporary one linked later) because
        inotify names the file of a close by the name it was opened with,
        and watchers learn of the owner's death by that close. A sweep may
        take the new file for dead before the flock and remove it: then it
        has no link left, and another id is tried."""
        self._sweep()
        while True:
            session_id = uuid.uuid4().hex
            fd = self.access.create(session_id, os.O_RDWR | os.O_APPEND, self.fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:
                break
            os.close(fd)
        header = {"ttl": ttl, "pid": os.getpid(), "created": time.time()}
        os.write(fd, json.dumps(header).encode() + b"\n")
        return Session(session_id, fd)

    def _sweep(self) -> None:
        """Remove the files of dead sessions and markers left without a session."""
        names = os.listdir(self.fd)
        for name in names:
            if name[0] != "." and not name.endswith(EVICTED):
                unlink_if_dead(self.fd, name)
        for name in names:
            if name.endswith(EVICTED) and not os.path.exists(f"{self.path}/{name[:-len(EVICTED)]}"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self.fd)

    def owner(self, session: Session | None, handle: Dir, epoch: int) -> Session:
        """The live session that a new ephemeral key in ``handle`` belongs to.

        The directory is listed in the session file before the first key is
        made there, and the eviction marker is checked whenever the
        directory's eviction epoch moved."""
        if session is None or session.evicted:
            raise SessionExpired("no live session; ephemeral keys need one")
        seen = session.dirs.get(handle.rel)
        if seen != epoch:
            if seen is None:
                os.write(session.fd, f"{handle.rel}\n".encode())
            if self.is_evicted(session.id):
                session.evicted = True
                raise SessionExpired("this session was evicted")
            session.dirs[handle.rel] = epoch
        return session

    def refresh(self, session: Session | None) -> None:
        if session is None or session.evicted:
            raise SessionExpired("the file backend's session is gone")
        if self.is_evicted(session.id):
            session.evicted = True
            raise SessionExpired("this session was evicted")
        os.utime(session.fd)

    def remove(self, session: Session) -> None:
        """Remove the files of ``session`` (its keys are gone already)."""
        for name in (session.id, session.id + EVICTED):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.fd)

    def mark_evicted(self, session_id: str) -> list[str] | None:
        """Mark the live session ``session_id`` evicted; the key prefixes of
        the directories it listed, or None if it is not live or was marked."""
        try:
            fd = os.open(session_id, os.O_RDONLY, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        try:
            if not alive(fd):
                return None
            try:
                os.close(self.access.create(session_id + EVICTED, os.O_WRONLY, self.fd))
            except FileExistsError:
                return None
            text = read_all(fd, b"", os.fstat(fd).st_size).decode()
        finally:
            os.close(fd)
        return [rel for rel in dict.fromkeys(text.split("\n")[1:-1])
                if PREFIX_RE.match(rel) and (rel == "" or rel.endswith("/"))]

    def last_seen(self, session_id: str) -> float | None:
        try:
            fd = os.open(session_id, os.O_RDONLY, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        try:
            if not alive(fd) or self.is_evicted(session_id):
                return None
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)


def evict_in(handle: Dir, session_id: str) -> None:
    """Bump ``handle``'s eviction epoch and delete the session's keys there."""
    with handle.exclusive:
        counter, epoch, keys = load(handle.lock)
        store(handle.lock, counter, epoch + 1, keys)
        held = slot.read(handle.lock)
        if held is not None and held.owner == session_id:
            slot.empty(handle.lock)
        removed = 0
        for name in os.listdir(handle.fd):
            if name[0] != "." and not name.endswith(".d"):
                entry, _ = probe(handle.fd, handle.rel, name, handle.sessions)
                if entry is not None and entry.owner == session_id:
                    os.unlink(name, dir_fd=handle.fd)
                    removed += 1
        count_keys(handle.lock, -removed)


def _claim(root: str, root_fd: int, access: Access) -> None:
    """Make ``root`` a format 3 directory (``.sessions`` and ``.sessions.2``
    files saying so), or refuse it while a session of format 1 or 2 lives
    there. Caller holds the root's mutex (older processes make their
    sessions directory without it, hence the retries)."""
    for name, before in ((LEGACY, "format 2"), (FORMAT_2, "format 3")):
        for _ in range(5):
            try:
                info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                try:
                    fd = access.create(name, os.O_WRONLY, root_fd)
                except FileExistsError:
                    continue  # an older process made its directory meanwhile
                try:
                    os.write(fd, _MARKER)
                finally:
                    os.close(fd)
                break
            if stat.S_ISREG(info.st_mode):
                break
            if not stat.S_ISDIR(info.st_mode):
                raise ConfigurationError(f"refusing to use {root!r} as a file backend: {root}/{name} is neither "
                                         f"moot's file nor its directory; remove it if nothing else uses it")
            _retire(root, root_fd, name, before)
        else:
            raise OSError(errno.EAGAIN, f"processes from before {before} keep making {name}/ (retry)")


def _retire(root: str, root_fd: int, name: str, before: str) -> None:
    """Remove an older format's sessions directory ``name`` if no session
    there lives; refuse ``root`` (ConfigurationError naming the process) if
    one does."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        for session in os.listdir(fd):  # session files (and temporary ones) flocked by a live owner stay
            if not session.endswith(EVICTED):
                unlink_if_dead(fd, session)
        live = [session for session in os.listdir(fd) if not session.endswith(EVICTED)]
        if live:
            raise ConfigurationError(
                f"refusing to use {root!r} as a file backend: a moot from before {before} uses it "
                f"({_describe(fd, live[0])}), and the two formats cannot share a directory (each would take "
                f"the other's locks for free); stop or upgrade that process, or use another directory")
        for marker in os.listdir(fd):
            if marker.endswith(EVICTED):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(marker, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            raise


def _describe(sessions: int, name: str) -> str:
    """``session <id> of pid <pid>`` for a format 1 session file."""
    try:
        with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=sessions), "rb") as text:
            pid = json.loads(text.readline()).get("pid")
    except (OSError, ValueError, AttributeError):
        pid = None
    return f"session {name}" + (f" of pid {pid}" if pid is not None else "")
