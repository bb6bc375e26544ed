"""A directory's slot: the one entry of an uncontended queue, kept in the
directory's ``.lock`` file right after its record instead of in a key file.

Why: making and removing a key file (``link`` + ``unlink``) changes the
directory, which costs several times the rest of an uncontended
``acquire(); release()``. The slot is taken by ``enqueue`` only when the
directory has no key file, no subdirectory and no slot in use, in the same
``pwrite`` that advances the counter, and emptied by its owner's ``delete``:
the whole cycle touches no name.

The slot is a key like any other to every reader (``get``, ``list``, the
names of a directory), and lives as long as its owner's session, like an
ephemeral key file. Every other write in the directory *settles* the slot
first, under the directory's exclusive mutex: a live slot becomes the key
file it stands for (same name, value, version, seq and owner), a dead one is
emptied. So a second process queueing behind a slot finds an ordinary key
file to watch, and nothing but ``enqueue`` and its owner's ``delete`` ever
sees a slot in use; a watch armed on a key held in a slot settles it first,
so that its removal is a change of that name. (A key watch armed before the
entry exists sees it appear only once settled: only queue entries, whose
names nobody knows before they are made, go in a slot. Prefix watches see
every change of the slot: they watch the ``.lock`` file's writes too.)

Torn slots (a machine crash in the middle of writing one: its owner died
with the machine) read as empty and are emptied by the next write.

Callers hold the directory's mutex: shared to read, exclusive to write.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from moot.backends.base import Entry
from moot.backends.file.format import (
    EPHEMERAL,
    RECORD_SIZE,
    SEQUENTIAL,
    count_keys,
    entry_data,
    next_counter,
    owner_alive,
    pack_record,
    record,
)

if TYPE_CHECKING:
    from moot.backends.file.dirs import Dir

# magic, length of the key's start (the queue prefix's last segment), value length, seq (= version), owner
_SLOT = struct.Struct("<4sHIQ32s")
_MAGIC = b"slot"
_EMPTY = bytes(4)
#: Bytes read at once from a ``.lock`` file: its record and the slot of a small value.
READ = 512
#: The largest start and value a slot takes; larger entries go to key files.
MAX_START, MAX_VALUE = 64, READ - RECORD_SIZE - _SLOT.size - 64
#: The name a listing reports a dead slot by (to be emptied by :func:`reap_slot`).
DEAD_SLOT = ".lock"


class Slot:
    """The entry held in a slot."""

    __slots__ = ("name", "owner", "seq", "value")

    def __init__(self, name: str, value: bytes, seq: int, owner: str):
        self.name, self.value, self.seq, self.owner = name, value, seq, owner

    def entry(self, rel: str) -> Entry:
        return Entry(rel + self.name, self.value, self.seq, self.seq, self.owner)

    def alive(self, sessions: int, mine: str | None = None, seen: dict[str, bool] | None = None) -> bool:
        return owner_alive(sessions, self.owner, mine, seen)


def pack(start: str, value: bytes, seq: int, owner: str) -> bytes:
    """The slot holding ``start`` + seq, written right after the record."""
    raw = start.encode()
    return _SLOT.pack(_MAGIC, len(raw), len(value), seq, owner.encode()) + raw + value


def held(raw: bytes) -> bool:
    """Whether ``raw`` (read from the start of a ``.lock`` file) shows a slot in use."""
    return raw[RECORD_SIZE:RECORD_SIZE + 4] == _MAGIC


def parse(raw: bytes, lock: int) -> Slot | None:
    """The slot in ``raw`` (read from the start of the ``.lock`` file
    ``lock``; read on if the value is longer), or None if it is empty."""
    if not held(raw) or len(raw) < RECORD_SIZE + _SLOT.size:
        return None
    _, start_size, size, seq, owner = _SLOT.unpack_from(raw, RECORD_SIZE)
    begin = RECORD_SIZE + _SLOT.size
    end = begin + start_size + size
    if end > len(raw):
        raw = os.pread(lock, end, 0)
        if end > len(raw):
            return None  # torn by a machine crash while it was written: its owner is gone with it
    start = raw[begin:begin + start_size].decode(errors="replace")
    return Slot(f"{start}{seq:020d}", raw[begin + start_size:end], seq, owner.decode(errors="replace"))


def read(lock: int) -> Slot | None:
    """The entry in the slot of the ``.lock`` file ``lock``, or None."""
    return parse(os.pread(lock, READ, 0), lock)


def empty(lock: int) -> None:
    os.pwrite(lock, _EMPTY, RECORD_SIZE)


def holds(lock: int, tail: bytes) -> bool:
    """Whether the slot of ``lock`` holds the entry of ``tail`` (its seq and
    owner as :func:`pack` wrote them: the bytes at ``_TAIL_AT``), compared raw:
    the hot path."""
    raw = os.pread(lock, _SLOT.size, RECORD_SIZE)
    return raw[:4] == _MAGIC and raw[_TAIL_AT:] == tail


_TAIL = struct.Struct("<Q32s")  # the seq and owner at the end of _SLOT
_TAIL_AT = _SLOT.size - _TAIL.size


def settle(dir_fd: int, lock: int, sessions: int, create: Callable[[str, int, int], int],
           only: str | None = None) -> None:
    """Make a live slot of the directory ``dir_fd`` the key file it stands
    for and empty it; empty a dead or torn one. With ``only``, only if the
    slot holds that name (or is torn). ``create(name, flags, dir_fd)`` makes
    a file (the access mode's). Caller holds the exclusive mutex."""
    raw = os.pread(lock, READ, 0)
    if not held(raw):
        return
    slot = parse(raw, lock)
    if slot is not None and only is not None and slot.name != only:
        return
    if slot is not None and slot.alive(sessions):
        count_keys(lock, +1)  # raised before the file is made: the bound stays a bound
        fd = create(slot.name, os.O_WRONLY, dir_fd)
        try:
            os.write(fd, entry_data(EPHEMERAL | SEQUENTIAL, b"", slot.value, slot.seq, slot.seq, slot.owner))
        finally:
            os.close(fd)
    empty(lock)


def reap_slot(lock: int, sessions: int) -> None:
    """Empty the slot of ``lock`` if it holds a dead or torn entry. Caller holds the exclusive mutex."""
    raw = os.pread(lock, READ, 0)
    if held(raw):
        slot = parse(raw, lock)
        if slot is None or not slot.alive(sessions):
            empty(lock)


def probe(handle: Dir, name: str, mine: str | None) -> tuple[Entry | None, bool]:
    """:func:`moot.backends.file.format.probe` of the slot of ``handle`` for
    the key file ``name``: its entry if the slot holds it alive, and whether
    it holds it dead. Caller holds the mutex."""
    held = read(handle.lock)
    if held is None or held.name != name:
        return None, False
    if held.alive(handle.sessions, mine):
        return held.entry(handle.rel), False
    return None, True


class Slots:
    """The slots of one backend object: taking one, settling any, and
    releasing this object's own (which it remembers by key)."""

    def __init__(self, create: Callable[[str, int, int], int]):
        self._create = create  # the access mode's create(name, flags, dir_fd)
        self._mine: dict[str, tuple[str, int, bytes]] = {}  # my keys held in slots -> (directory, seq, tail)

    def take(self, handle: Dir, raw: bytes, start: str, value: bytes, owner: Callable[[Dir, int], str]) -> \
            Entry | None:
        """Put the entry ``start`` + seq in the slot of ``handle`` if the
        directory is alone (no key file, no subdirectory, slot empty); None
        if not. ``raw``: what :data:`READ` bytes of its ``.lock`` read, under
        the exclusive mutex the caller holds; ``owner(handle, epoch)``: the
        id of the session the entry lives by."""
        if held(raw) or len(value) > MAX_VALUE or len(start) > MAX_START:
            return None
        counter, epoch, keys = record(raw)
        if keys != 0 or os.fstat(handle.fd).st_nlink != 2:  # a bound of 0 files; and "." and ".." alone link it
            return None
        session = owner(handle, epoch)
        seq = next_counter(counter)
        slot = pack(start, value, seq, session)
        os.pwrite(handle.lock, pack_record(seq, epoch, 0) + slot, 0)
        entry = Entry(f"{handle.rel}{start}{seq:020d}", value, seq, seq, session)
        self._mine[entry.key] = (handle.rel, seq, slot[_TAIL_AT:_SLOT.size])  # its tail, for holds()
        return entry

    def settle(self, handle: Dir, only: str | None = None) -> None:
        """:func:`settle` the slot of ``handle``. Caller holds the exclusive mutex."""
        settle(handle.fd, handle.lock, handle.sessions, self._create, only)

    def forget(self, key: str, version: int | None) -> tuple[str, bytes] | None:
        """The directory and tail (see :func:`holds`) of my entry ``key`` (if ``version``
        is None or its version) if I put it in a slot, forgotten now: to be
        released with :meth:`release`."""
        mine = self._mine.get(key)
        if mine is None or (version is not None and version != mine[1]):
            return None
        del self._mine[key]
        return mine[0], mine[2]

    def forget_all(self) -> list[tuple[str, bytes]]:
        """:meth:`forget` of every entry I put in a slot (the session ends)."""
        mine, self._mine = self._mine, {}
        return [(rel, entry_tail) for rel, _, entry_tail in mine.values()]

    @staticmethod
    def release(handle: Dir, entry_tail: bytes) -> bool:
        """Empty the slot of ``handle`` if it still holds the entry of
        ``entry_tail``; False if the entry left it (settled into a key file,
        or evicted). Takes the exclusive mutex."""
        fcntl.flock(handle.lock, fcntl.LOCK_EX)  # handle.exclusive, unrolled: the hot path
        try:
            if not holds(handle.lock, entry_tail):
                return False
            empty(handle.lock)
            return True
        finally:
            fcntl.flock(handle.lock, fcntl.LOCK_UN)
