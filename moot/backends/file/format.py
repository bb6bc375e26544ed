"""The file:// backend's on-disk format: key names, the header of a key file,
the record of a directory's ``.lock``, and reading one entry back.

Functions that read or write a directory's files expect the caller to hold
that directory's mutex (shared to read, exclusive to write).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import struct
import time
import uuid

from moot.backends.base import Entry
from moot.errors import InvalidArgument

_SEGMENT = r"[A-Za-z0-9_%-]+"
KEY_RE = re.compile(rf"(?:{_SEGMENT}/)*{_SEGMENT}\Z")
PREFIX_RE = re.compile(rf"(?:{_SEGMENT}/)*[A-Za-z0-9_%-]*\Z")
SESSION_RE = re.compile(r"[0-9a-f]{32}\Z")
_MAX_SEGMENT = 200  # longer segments are stored under a hashed name
_KEPT = 100  # characters of a long segment kept readable in its hashed name

MAGIC = b"moot"
# magic, format, flags, stored segment length, value length, version, seq, owner
HEADER = struct.Struct("<4sBBHIQq32s")
EPHEMERAL, SEQUENTIAL = 1, 2
# A directory's record: its counter, eviction epoch, an upper bound on its
# number of key files and the boot that bound was written in (a machine crash
# may lose unsynced writes, so a bound from another boot is not trusted).
_RECORD = struct.Struct("<QQQ16s")
RECORD_SIZE = _RECORD_SIZE = _RECORD.size
_pack_record, _unpack_record = _RECORD.pack, _RECORD.unpack_from
_READ = 4096
_NO_BOOT = bytes(_RECORD.size - 24)  # the boot field of a record whose bound is unknown

SPARE = ".s-"  # the name prefix of format 1's spares, swept once their owner is gone
SPARE_2 = ".f-"  # the name prefix of format 2's spares: .f-<session>-<random> (see spares.py)
EVICTED = ".evicted"  # the name suffix of an eviction marker (see sessions.py)
SESSIONS = ".sessions.3"  # the directory of session files (format 3)
#: Formats 1 and 2 kept their session files in these directories; format 3
#: keeps a file of each name (saying so) there, which a process of those
#: formats cannot open as a directory: it refuses the directory instead of
#: sharing it (see sessions.py).
LEGACY = ".sessions"
FORMAT_2 = ".sessions.2"


def next_counter(counter: int) -> int:
    """The directory's next counter value: above the last one, and never below
    the clock in microseconds, so that seqs keep growing even if a machine
    crash lost the last (unsynced) writes of the counter, unless the clock
    was stepped back by more than the crash and reboot took."""
    return max(counter + 1, time.time_ns() // 1000)


def disk(segment: str) -> str:
    """The file name of one key segment."""
    if len(segment) <= _MAX_SEGMENT:
        return segment
    return f"{segment[:_KEPT]}~{hashlib.sha256(segment.encode()).hexdigest()}"


def split(key: str) -> tuple[str, str]:
    """``'a/b/c'`` -> ``('a/b/', 'c')``: the directory's key prefix and the last segment."""
    rel, slash, segment = key.rpartition("/")
    return rel + slash, segment


def key_path(key: str) -> tuple[str, str, str]:
    """A valid key's (directory's key prefix, last segment, that segment's file name)."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise _bad(key, "key")
    rel, slash, segment = key.rpartition("/")
    return rel + slash, segment, segment if len(segment) <= _MAX_SEGMENT else disk(segment)


def prefix_path(prefix: str) -> tuple[str, str]:
    """A valid prefix's (directory's key prefix, start of the last segment)."""
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
        raise _bad(prefix, "prefix")
    rel, slash, start = prefix.rpartition("/")
    return rel + slash, start


def _bad(key: object, what: str) -> InvalidArgument:
    return InvalidArgument(f"bad {what} {key!r}: '/'-separated segments of [A-Za-z0-9_%-]")


@functools.cache
def boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as text:
            return uuid.UUID(text.read().strip()).bytes
    except (OSError, ValueError):
        return uuid.uuid4().bytes  # then only this process trusts its own bounds


def alive(fd: int) -> bool:
    """True if another open file holds an exclusive flock on ``fd``'s file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def owner_alive(sessions: int, owner: str, mine: str | None = None, seen: dict[str, bool] | None = None) -> bool:
    """:func:`session_alive`, but ``mine`` (the caller's own live session)
    needs no check, and ``seen`` caches the sessions checked during one
    listing."""
    if owner == mine:
        return True
    live = seen.get(owner) if seen is not None else None
    if live is None:
        live = session_alive(sessions, owner)
        if seen is not None:
            seen[owner] = live
    return live


def entry_data(flags: int, stored: bytes, value: bytes, version: int, seq: int, owner: str | None) -> bytes:
    """A key file's contents: its header (``seq`` 0 if not sequential,
    ``owner`` None if persistent), the full segment if its name is hashed
    (``stored``, else empty), then the value."""
    return HEADER.pack(MAGIC, 1, flags, len(stored), len(value), version, seq,
                       owner.encode() if owner else b"") + stored + value


def session_alive(sessions: int, owner: str) -> bool:
    """True while the session ``owner`` lives: its owner holds the exclusive
    flock on its file in the sessions directory ``sessions``."""
    if not SESSION_RE.match(owner):
        return False
    try:
        fd = os.open(owner, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=sessions)
    except FileNotFoundError:
        return False
    try:
        return alive(fd)
    finally:
        os.close(fd)


def unlink_if_dead(dir_fd: int, name: str) -> None:
    """Remove the file ``name`` of directory ``dir_fd`` unless its owner holds
    its flock (a spare or a session file whose owner closed it or died)."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    try:
        if not alive(fd):
            with contextlib.suppress(FileNotFoundError):  # its owner removed it meanwhile
                os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(fd)


def read_all(fd: int, data: bytes, size: int) -> bytes:
    """``data`` (read from offset 0) completed to ``size`` bytes if the file has them."""
    while len(data) < size:
        more = os.pread(fd, size - len(data), len(data))
        if not more:
            break
        data += more
    return data


# -- a directory's record (in its .lock file) ----------------------------------
def load(lock: int) -> tuple[int, int, int | None]:
    """The directory's (counter, eviction epoch, bound on key files or None if
    unknown), read from its ``.lock`` file ``lock``."""
    return record(os.pread(lock, _RECORD_SIZE, 0))


def record(raw: bytes) -> tuple[int, int, int | None]:
    """:func:`load` of ``raw``, read from the start of a ``.lock`` file."""
    if len(raw) < _RECORD_SIZE:
        return 0, 0, None
    counter, epoch, keys, boot = _unpack_record(raw)
    return counter, epoch, keys if boot == boot_id() else None


def store(lock: int, counter: int, epoch: int, keys: int | None) -> None:
    os.pwrite(lock, pack_record(counter, epoch, keys), 0)


def pack_record(counter: int, epoch: int, keys: int | None) -> bytes:
    if keys is None:
        return _pack_record(counter, epoch, 0, _NO_BOOT)
    return _pack_record(counter, epoch, keys if keys > 0 else 0, boot_id())


def bump(lock: int) -> tuple[int, int, int | None]:
    """Before a key is made: take the directory's next counter value and
    raise its bound on key files by one, in its record; return (that value,
    the eviction epoch, the bound)."""
    counter, epoch, keys = load(lock)
    version = next_counter(counter)
    keys = None if keys is None else keys + 1
    store(lock, version, epoch, keys)
    return version, epoch, keys


def count_keys(lock: int, delta: int = 0, exact: int | None = None) -> None:
    """Lower the directory's bound on key files by ``-delta`` after
    unlinks (only after them: it must stay an upper bound), or set it to
    ``exact`` after a full scan under the exclusive mutex."""
    counter, epoch, keys = load(lock)
    store(lock, counter, epoch, exact if exact is not None else None if keys is None else keys + delta)


# -- key files -----------------------------------------------------------------
def probe(dir_fd: int, rel: str, name: str, sessions: int, mine: str | None = None,
          seen: dict[str, bool] | None = None) -> tuple[Entry | None, bool]:
    """(the live entry stored as ``name`` in the directory ``dir_fd`` of key
    prefix ``rel``, or None; whether a dead entry is there).

    An ephemeral entry lives while its owner's session does (its file in the
    sessions directory ``sessions`` is flocked); ``mine`` is the caller's own
    live session, which needs no check; ``seen`` caches the sessions checked
    during one listing."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, False
    try:
        data = os.read(fd, _READ)
        if len(data) < HEADER.size:
            return None, True  # a crash while it was being written
        magic, _, flags, stored, size, version, seq, owner = HEADER.unpack_from(data)
        end = HEADER.size + stored + size
        if magic != MAGIC:
            return None, True
        if end > len(data):
            data = read_all(fd, data, end)
            if end > len(data):
                return None, True
    finally:
        os.close(fd)
    if flags & EPHEMERAL and not owner_alive(sessions, owner.decode(errors="replace"), mine, seen):
        return None, True
    segment = data[HEADER.size:HEADER.size + stored].decode() if stored else name
    return Entry(
        rel + segment,
        data[HEADER.size + stored:end],
        version,
        seq if flags & SEQUENTIAL else None,
        owner.decode(errors="replace") if flags & EPHEMERAL else None,
    ), False


def owner_of(path: str) -> str | None:
    """The owner session of the ephemeral entry at ``path`` (None if there is
    none, or the file is not a whole header yet)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        data = os.read(fd, HEADER.size)
    finally:
        os.close(fd)
    if len(data) < HEADER.size:
        return None
    magic, _, flags, _, _, _, _, owner = HEADER.unpack(data)
    return owner.decode(errors="replace") if magic == MAGIC and flags & EPHEMERAL else None
