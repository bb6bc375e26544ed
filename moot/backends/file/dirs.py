"""The directories of the file:// tree: open handles on each (a bounded cache
per backend object), reading a directory's entries, and removing what dead
owners left there.

A directory's ``.lock`` file is its mutex (:class:`Mutex`, an ``flock``:
exclusive for writes, shared for reads); functions that take a :class:`Dir`
whose mutex they do not take themselves say so.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import uuid
from types import TracebackType

from moot.backends.base import Entry
from moot.backends.file.format import SPARE, count_keys, disk, probe, split, unlink_if_dead

_flock, _UNLOCK = fcntl.flock, fcntl.LOCK_UN
_MAX_DIRS = 32  # directory handles kept open per backend object (2 fds each)


class Mutex:
    """``with``: one directory's mutex (its ``.lock`` file's ``flock``, shared
    or exclusive) held for the block, released when the block ends however it
    ends. Only the process that took it releases it: a forked child never
    enters or leaves its parent's (it closes its copies of the files)."""

    __slots__ = ("_fd", "_how")

    def __init__(self, fd: int, how: int):
        self._fd, self._how = fd, how

    def __enter__(self) -> None:
        _flock(self._fd, self._how)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        _flock(self._fd, _UNLOCK)


class Dir:
    """Open handles on one directory of the tree: the directory and its
    ``.lock``, with its mutex as ``exclusive`` (to write) and ``shared`` (to
    read, so nobody reads a half-written value)."""

    __slots__ = ("exclusive", "fd", "lock", "path", "rel", "shared")

    def __init__(self, rel: str, path: str, fd: int, lock: int):
        self.rel, self.path, self.fd, self.lock = rel, path, fd, lock
        self.exclusive = Mutex(lock, fcntl.LOCK_EX)
        self.shared = Mutex(lock, fcntl.LOCK_SH)

    def close(self) -> None:
        os.close(self.lock)
        os.close(self.fd)


def scan(handle: Dir, start: str, out: list[Entry], known: Entry | None = None) -> tuple[
        list[str], list[str], int]:
    """Append the live entries of ``handle`` whose segment starts with
    ``start`` to ``out``; return (subdirectory names, dead entry names,
    number of key files). Caller holds the mutex."""
    subdirs: list[str] = []
    dead: list[str] = []
    files = 0
    known_name = disk(split(known.key)[1]) if known is not None else None
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
        entry, is_dead = probe(handle.fd, handle.rel, name)
        if is_dead:
            dead.append(name)
        elif entry is not None and entry.key.startswith(start, len(handle.rel)):
            out.append(entry)
    return subdirs, dead, files


def sweep(handle: Dir) -> None:
    """Remove dead spares and dead entries from ``handle``."""
    files = 0
    with handle.exclusive:
        for name in os.listdir(handle.fd):
            if name.startswith(SPARE):
                unlink_if_dead(handle.fd, name)
            elif name[0] != "." and not name.endswith(".d"):
                if probe(handle.fd, handle.rel, name)[1]:
                    os.unlink(name, dir_fd=handle.fd)
                else:
                    files += 1
        count_keys(handle.lock, exact=files)


def reap(handle: Dir, names: list[str]) -> None:
    """Remove the named entries of ``handle`` that are (still) dead, and dead spares."""
    with handle.exclusive:
        removed = 0
        for name in names:
            if probe(handle.fd, handle.rel, name)[1]:
                os.unlink(name, dir_fd=handle.fd)
                removed += 1
        count_keys(handle.lock, -removed)
    sweep(handle)


def subdir_prefixes(handle: Dir, names: list[str], start: str) -> list[str]:
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


class Dirs:
    """The directory handles one backend object keeps open (the most recently
    used ones). Not thread-safe: the backend's lock guards it."""

    __slots__ = ("_open", "_swept", "root")

    def __init__(self, root: str):
        self.root = root
        self._open: collections.OrderedDict[str, Dir] = collections.OrderedDict()
        self._swept: set[str] = set()

    def path(self, rel: str) -> str:
        return self.root + "".join(f"/{disk(s)}.d" for s in rel.split("/")[:-1])

    def cached(self, rel: str) -> Dir | None:
        return self._open.get(rel)

    def get(self, rel: str, create: bool, cache: bool = True) -> Dir | None:
        """Handles on the directory of key prefix ``rel`` (``''`` or ending in
        ``/``); None if it does not exist and ``create`` is False. With
        ``cache`` False, a handle that is not cached is returned uncached: the
        caller closes it."""
        handle = self._open.get(rel)
        if handle is not None:
            self._open.move_to_end(rel)
            return handle
        path = self.path(rel)
        if create and "~" in path[len(self.root):]:
            self._make(rel)  # also names a hashed directory whose maker died before naming it
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if not create:
                return None
            self._make(rel)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            lock = os.open(".lock", os.O_RDWR | os.O_CREAT, 0o600, dir_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        handle = Dir(rel, path, fd, lock)
        if not cache:
            return handle
        self._open[rel] = handle
        if len(self._open) > _MAX_DIRS:
            self._open.popitem(last=False)[1].close()
        if rel not in self._swept:
            self._swept.add(rel)
            sweep(handle)
        return handle

    def _make(self, rel: str) -> None:
        path = self.root
        for segment in rel.split("/")[:-1]:
            name = disk(segment)
            path = f"{path}/{name}.d"
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
            if name != segment and not os.path.exists(f"{path}/.name"):
                temp = f"{path}/.name.{uuid.uuid4().hex}"
                with open(temp, "x", encoding="ascii") as out:
                    out.write(segment)
                os.replace(temp, f"{path}/.name")

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def fds(self) -> list[int]:
        """Every descriptor held (for a forked child to close its copies)."""
        return [h.fd for h in self._open.values()] + [h.lock for h in self._open.values()]
