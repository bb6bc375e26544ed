"""Sessions of the file:// backend: one file per session in ``.sessions/``,
flocked by its owner (alive while flocked; the heartbeat touches its mtime),
listing the directories where the session made ephemeral keys, and eviction.

An evicted session gets a marker file; the evicter then deletes the session's
keys in the directories it listed, bumping each one's eviction epoch, and an
owner that sees an epoch change checks its marker before making a key there,
so an evicted session cannot add keys behind the evicter's back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid

from moot.backends.base import Watch
from moot.backends.file.dirs import Dir
from moot.backends.file.format import (
    EVICTED,
    PREFIX_RE,
    alive,
    count_keys,
    load,
    probe,
    read_all,
    store,
    unlink_if_dead,
)
from moot.errors import SessionExpired


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

    __slots__ = ("fd", "path")

    def __init__(self) -> None:
        self.fd = -1
        self.path = ""

    def open(self, root: str) -> None:
        self.path = os.path.join(root, ".sessions")
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.path, 0o700)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

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
        """A new session: its file made under a temporary name, flocked, then linked."""
        session_id = uuid.uuid4().hex
        self._sweep()
        temp = f".t-{session_id}"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600, dir_fd=self.fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        header = {"ttl": ttl, "pid": os.getpid(), "created": time.time()}
        os.write(fd, json.dumps(header).encode() + b"\n")
        os.link(temp, session_id, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        os.unlink(temp, dir_fd=self.fd)
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
                os.close(os.open(session_id + EVICTED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600,
                                 dir_fd=self.fd))
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
        removed = 0
        for name in os.listdir(handle.fd):
            if name[0] != "." and not name.endswith(".d"):
                entry, _ = probe(handle.fd, handle.rel, name)
                if entry is not None and entry.owner == session_id:
                    os.unlink(name, dir_fd=handle.fd)
                    removed += 1
        count_keys(handle.lock, -removed)
