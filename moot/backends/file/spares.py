"""Spares: key files a session keeps for reuse. An ephemeral key is a hard
link to a spare, a file named ``.f-<session>-<random>`` in the key's
directory: making the key writes the spare and links it under the key's
name; deleting the key unlinks that name, and the spare waits for the next
key there. Why: allocating and freeing an inode costs several times a
``link`` plus an ``unlink`` (about 50 us against 11 us on ext4).

A spare carries no flock (the key lives by its session's, see sessions.py)
and needs no open descriptor: a few are kept open (at most ``_MAX_OPEN`` per
backend object), the others are opened again when reused, so descriptors do
not grow with the keys. Spares belong to one session: dropped when it
closes, swept (``dirs.sweep``) once it is dead.
"""

from __future__ import annotations

import collections
import contextlib
import os
import uuid
from collections.abc import Callable

from moot.backends.base import Entry
from moot.backends.file.dirs import Dir, Dirs
from moot.backends.file.format import EPHEMERAL, SEQUENTIAL, SPARE_2, bump, count_keys, disk, entry_data, probe

_MAX_FREE = 32  # unused spares kept per backend object
_MAX_OPEN = 2  # spares kept open per backend object (the uncontended loop reuses one)


class Spare:
    """A file of this session's that ephemeral keys link to; ``fd`` is -1 when not open."""

    __slots__ = ("fd", "ino", "name")

    def __init__(self, fd: int, ino: int, name: str):
        self.fd, self.ino, self.name = fd, ino, name


class Spares:
    """The spares of one backend object's session: those its keys link
    (``owned``) and unused ones kept for the next key. Not thread-safe: the
    backend's lock guards it; methods that take a :class:`Dir` expect its
    exclusive mutex."""

    __slots__ = ("_dirs", "_open", "free", "free_count", "owned")

    def __init__(self, dirs: Dirs):
        self._dirs = dirs
        self.owned: dict[str, dict[str, Spare]] = {}  # dir -> key file name -> spare it links
        self.free: dict[str, list[Spare]] = {}
        self.free_count = 0
        self._open: collections.OrderedDict[Spare, None] = collections.OrderedDict()

    def put(self, handle: Dir, segment: str, value: bytes, owner: Callable[[Dir, int], str] | None,
            create: Callable[[str, int, int], int], sequential: bool = False) -> tuple[Entry | None, int | None]:
        """Make the key file ``segment`` (``segment`` + seq if ``sequential``)
        in ``handle`` if absent (a dead entry is replaced); None if a live one
        is there. Ephemeral if ``owner`` is given: ``owner(handle, epoch)`` is
        the id of the session it lives by, and the file is linked from one of
        its spares. ``create(name, flags, dir_fd)``: the access mode's. Also
        returns the directory's bound on key files (None if unknown)."""
        version, epoch, keys = bump(handle.lock)  # the bound raised before the key is made: it stays a bound
        seq = version if sequential else None
        if sequential:
            segment = f"{segment}{version:020d}"
        name = disk(segment)
        stored = segment.encode() if name != segment else b""
        session = owner(handle, epoch) if owner is not None else None
        flags = (EPHEMERAL if session else 0) | (SEQUENTIAL if sequential else 0)
        data = entry_data(flags, stored, value, version, version if sequential else 0, session)
        spare = self.take(handle, session) if session else None
        entry = Entry(handle.rel + segment, value, version, seq, session)
        linked = False
        try:
            if spare is not None:
                os.pwrite(spare.fd, data, 0)
            for _ in range(2):
                try:
                    if spare is None:
                        fd = create(name, os.O_WRONLY, handle.fd)
                        try:
                            os.write(fd, data)
                        finally:
                            os.close(fd)
                    else:
                        os.link(spare.name, name, src_dir_fd=handle.fd, dst_dir_fd=handle.fd,
                                follow_symlinks=False)
                        linked = True
                        owned = self.owned.setdefault(handle.rel, {})
                        before = owned.get(name)
                        owned[name] = spare
                        if before is not None:  # that key was deleted by someone else: its spare is free
                            self.give_back(handle.rel, before)
                    return entry, keys
                except FileExistsError:
                    if not probe(handle.fd, handle.rel, name, handle.sessions)[1]:
                        break
                    os.unlink(name, dir_fd=handle.fd)  # a dead entry counts as absent
            return None, keys
        finally:
            if spare is not None and not linked:
                self.give_back(handle.rel, spare)

    def take(self, handle: Dir, session: str) -> Spare:
        """An unlinked spare of ``session`` in ``handle``, open for writing."""
        free = self.free.get(handle.rel)
        while free:
            self.free_count -= 1
            spare = free.pop()
            if self._ready(handle, spare):
                return spare
        name = f"{SPARE_2}{session}-{uuid.uuid4().hex[:16]}"
        fd = self._dirs.access.create(name, os.O_RDWR, handle.fd)
        spare = Spare(fd, os.fstat(fd).st_ino, name)
        self._keep_open(spare)
        return spare

    def _ready(self, handle: Dir, spare: Spare) -> bool:
        """Open ``spare`` if need be; False (and forgotten) if it is gone (swept
        by mistake) or still linked somewhere."""
        if spare.fd < 0:
            try:
                spare.fd = os.open(spare.name, os.O_RDWR | os.O_NOFOLLOW, dir_fd=handle.fd)
            except FileNotFoundError:
                return False
            self._keep_open(spare)
        else:
            self._open.move_to_end(spare)  # open spares are the ones in _open
        info = os.fstat(spare.fd)
        if info.st_nlink != 1 or info.st_ino != spare.ino:
            self.drop(handle.rel, spare)
            return False
        return True

    def _keep_open(self, spare: Spare) -> None:
        self._open[spare] = None
        self._open.move_to_end(spare)
        while len(self._open) > _MAX_OPEN:
            oldest, _ = self._open.popitem(last=False)
            os.close(oldest.fd)
            oldest.fd = -1

    def _close(self, spare: Spare) -> None:
        if spare.fd >= 0:
            self._open.pop(spare, None)
            os.close(spare.fd)
            spare.fd = -1

    def release(self, rel: str, name: str) -> None:
        """The key file ``name`` of directory ``rel`` was deleted: free the
        spare it linked, if mine (by name, not by a scan of every key: a
        session with 10,000 keys in one directory deletes each in O(1))."""
        spare = self.owned.get(rel, {}).pop(name, None)
        if spare is not None:
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
        self._close(spare)

    def unlink_owned(self, handle: Dir, name: str, spare: Spare) -> bool:
        """Delete ``name`` if it still links ``spare``; the spare is freed either way."""
        del self.owned[handle.rel][name]
        try:  # is the name still the spare's inode?
            linked = os.stat(name, dir_fd=handle.fd, follow_symlinks=False).st_ino == spare.ino
        except FileNotFoundError:
            linked = False
        if linked:
            os.unlink(name, dir_fd=handle.fd)
            count_keys(handle.lock, -1)
        self.give_back(handle.rel, spare)
        return linked

    def end_session(self) -> None:
        """Delete every key linked to a spare of this object, and drop every
        spare (closing its session)."""
        for rel, owned in list(self.owned.items()):
            handle = self._dirs.get(rel, create=False)
            if handle is not None:
                with handle.exclusive:
                    for name, spare in list(owned.items()):
                        self.unlink_owned(handle, name, spare)
            for spare in owned.values():
                self.drop(rel, spare)
        self.owned.clear()
        for rel, spares in self.free.items():
            for spare in spares:
                self.drop(rel, spare)
        self.free.clear()
        self.free_count = 0

    def fds(self) -> list[int]:
        """Every descriptor held (for a forked child to close its copies)."""
        return [spare.fd for spare in self._open]
