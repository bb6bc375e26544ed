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
from collections.abc import Set as AbstractSet
from types import TracebackType

from moot.backends.base import Entry
from moot.backends.file import slot
from moot.backends.file.access import Access
from moot.backends.file.format import SPARE, SPARE_2, count_keys, disk, probe, session_alive, split, unlink_if_dead

_flock, _UNLOCK = fcntl.flock, fcntl.LOCK_UN
#: Directory handles kept open per backend object (2 fds each): few, so that
#: a process waiting on a thousand locks keeps as many descriptors as on one.
_MAX_DIRS = 4


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

    __slots__ = ("exclusive", "fd", "lock", "path", "rel", "sessions", "shared")

    def __init__(self, rel: str, path: str, fd: int, lock: int, sessions: int):
        self.rel, self.path, self.fd, self.lock = rel, path, fd, lock
        self.sessions = sessions  # the sessions directory (not owned: the backend closes it)
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
    seen: dict[str, bool] = {}
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
        entry, is_dead = probe(handle.fd, handle.rel, name, handle.sessions, seen=seen)
        if is_dead:
            dead.append(name)
        elif entry is not None and entry.key.startswith(start, len(handle.rel)):
            out.append(entry)
    held = slot.read(handle.lock)
    if held is not None:
        if not held.alive(handle.sessions, seen=seen):
            dead.append(slot.DEAD_SLOT)
        elif held.name.startswith(start):
            out.append(held.entry(handle.rel))
    return subdirs, dead, files


def live_names(handle: Dir, mine: str | None, known: AbstractSet[str] = frozenset()) -> tuple[
        list[str], list[str], list[str]]:
    """(the segments of the live key files of ``handle``, the names of dead
    ones, the owners probed and found alive), reading no key file that is a
    hard link to a spare: the spare's name tells its owner session
    (``.f-<session>-...``), and the directory listing gives every name's
    inode, so a key whose inode is a spare's belongs to that spare's session,
    which is checked once (``mine``, the caller's live session, and
    ``known``, owners known alive, need no check). Other keys (persistent
    ones, hashed names, keys whose spare is gone) are read as ``scan`` reads
    them. Caller holds the mutex (shared at least): nothing is linked or
    unlinked meanwhile."""
    spares: dict[int, str] = {}
    keys: list[tuple[str, int]] = []
    with os.scandir(handle.fd) as listing:
        for item in listing:
            name = item.name
            if name[0] == ".":
                if name.startswith(SPARE_2):
                    spares[item.inode()] = name[len(SPARE_2):len(SPARE_2) + 32]
            elif not name.endswith(".d"):
                keys.append((name, item.inode()))
    live: list[str] = []
    dead: list[str] = []
    seen: dict[str, bool] = {} if mine is None else {mine: True}
    for name, inode in keys:
        owner = spares.get(inode)
        if owner is None or "~" in name:
            entry, is_dead = probe(handle.fd, handle.rel, name, handle.sessions, mine, seen)
            if is_dead:
                dead.append(name)
            elif entry is not None:
                live.append(entry.key[len(handle.rel):])
            continue
        if owner in known:
            live.append(name)
            continue
        alive = seen.get(owner)
        if alive is None:
            alive = seen[owner] = session_alive(handle.sessions, owner)
        (live if alive else dead).append(name)
    held = slot.read(handle.lock)
    if held is not None:
        if held.owner in known or held.alive(handle.sessions, mine, seen):
            live.append(held.name)
        else:
            dead.append(slot.DEAD_SLOT)
    return live, dead, [owner for owner, alive in seen.items() if alive and owner != mine]


def sweep(handle: Dir) -> None:
    """Remove dead entries and the spares of dead sessions (and of format 1) from ``handle``."""
    files = 0
    seen: dict[str, bool] = {}
    with handle.exclusive:
        for name in os.listdir(handle.fd):
            if name.startswith(SPARE_2):
                owner = name[len(SPARE_2):len(SPARE_2) + 32]
                live = seen.get(owner)
                if live is None:
                    live = seen[owner] = session_alive(handle.sessions, owner)
                if not live:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=handle.fd)
            elif name.startswith(SPARE):
                unlink_if_dead(handle.fd, name)
            elif name[0] != "." and not name.endswith(".d"):
                if probe(handle.fd, handle.rel, name, handle.sessions, seen=seen)[1]:
                    os.unlink(name, dir_fd=handle.fd)
                else:
                    files += 1
        count_keys(handle.lock, exact=files)
        slot.reap_slot(handle.lock, handle.sessions)


def reap(handle: Dir, names: list[str]) -> None:
    """Remove the named entries of ``handle`` that are (still) dead, then sweep it."""
    with handle.exclusive:
        removed = 0
        for name in names:
            if name == slot.DEAD_SLOT:
                slot.reap_slot(handle.lock, handle.sessions)
            elif probe(handle.fd, handle.rel, name, handle.sessions)[1]:
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

    __slots__ = ("_open", "_swept", "access", "root", "sessions")

    def __init__(self, root: str, access: Access):
        self.root, self.access = root, access
        self.sessions = -1  # the sessions directory, once open
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
            lock = self.access.open_or_create(".lock", os.O_RDWR, fd)
        except BaseException:
            os.close(fd)
            raise
        handle = Dir(rel, path, fd, lock, self.sessions)
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
                self.access.mkdir(path)
            if name != segment and not os.path.exists(f"{path}/.name"):
                temp = f"{path}/.name.{uuid.uuid4().hex}"
                with open(self.access.create(temp, os.O_WRONLY), "w", encoding="ascii") as out:
                    out.write(segment)
                os.replace(temp, f"{path}/.name")

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def fds(self) -> list[int]:
        """Every descriptor held (for a forked child to close its copies)."""
        return [h.fd for h in self._open.values()] + [h.lock for h in self._open.values()]
