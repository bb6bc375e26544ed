"""Spares: files that one backend object keeps open with an exclusive
``flock``. An ephemeral key is a hard link to a spare, so the key lives
exactly as long as that ``flock``: the kernel drops it when the owner closes
the file or dies. Deleting a key unlinks only its name; the spare is reused by
the next ephemeral key in that directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid

from moot.backends.file.dirs import Dir, Dirs
from moot.backends.file.format import SPARE, count_keys

_MAX_FREE = 32  # unused spares kept open per backend object


class Spare:
    """A file this backend keeps open and flocked; ephemeral keys link to it."""

    __slots__ = ("fd", "name")

    def __init__(self, fd: int, name: str):
        self.fd, self.name = fd, name


class Spares:
    """The spares of one backend object: those its keys link (``owned``) and
    unused ones kept for the next key. Not thread-safe: the backend's lock
    guards it; methods that take a :class:`Dir` expect its exclusive mutex."""

    __slots__ = ("_dirs", "free", "free_count", "owned")

    def __init__(self, dirs: Dirs):
        self._dirs = dirs
        self.owned: dict[str, dict[str, Spare]] = {}  # dir -> key file name -> spare it links
        self.free: dict[str, list[Spare]] = {}
        self.free_count = 0

    def take(self, handle: Dir) -> Spare:
        free = self.free.get(handle.rel)
        if not free:
            self.reclaim(handle.rel)
            free = self.free.get(handle.rel)
        if free:
            self.free_count -= 1
            return free.pop()
        name = f"{SPARE}{uuid.uuid4().hex}"
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=handle.fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return Spare(fd, name)

    def reclaim(self, rel: str) -> None:
        """Free the spares of keys in ``rel`` that somebody else deleted."""
        owned = self.owned.get(rel, {})
        for name, spare in list(owned.items()):
            if os.fstat(spare.fd).st_nlink < 2:
                del owned[name]
                self.give_back(rel, spare)

    def give_back(self, rel: str, spare: Spare) -> None:
        if self.free_count < _MAX_FREE:
            self.free.setdefault(rel, []).append(spare)
            self.free_count += 1
        else:
            self.drop(rel, spare)

    def drop(self, rel: str, spare: Spare) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._dirs.path(rel)}/{spare.name}")
        os.close(spare.fd)

    def unlink_owned(self, handle: Dir, name: str, spare: Spare) -> bool:
        """Delete ``name`` if it still links ``spare``; the spare is freed either way.

        Only this object links its spares, one key name each, under the
        mutex: so a second link to the spare is ``name``, and its absence
        means somebody else deleted the key."""
        del self.owned[handle.rel][name]
        linked = os.fstat(spare.fd).st_nlink > 1
        if linked:
            os.unlink(name, dir_fd=handle.fd)
            count_keys(handle.lock, -1)
        self.give_back(handle.rel, spare)
        return linked

    def unlink_all(self) -> None:
        """Delete every key linked to a spare of this object (closing its session)."""
        for rel, owned in list(self.owned.items()):
            handle = self._dirs.get(rel, create=False)
            if handle is None:
                for spare in owned.values():
                    os.close(spare.fd)
                owned.clear()
                continue
            with handle.exclusive:
                for name, spare in list(owned.items()):
                    self.unlink_owned(handle, name, spare)
        self.owned.clear()

    def close(self) -> None:
        """Drop the unused spares (the owned ones went with the session)."""
        for rel, spares in self.free.items():
            for spare in spares:
                self.drop(rel, spare)
        self.free.clear()

    def fds(self) -> list[int]:
        """Every descriptor held (for a forked child to close its copies)."""
        spares = [s for owned in self.owned.values() for s in owned.values()]
        spares += [s for free in self.free.values() for s in free]
        return [s.fd for s in spares]
