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
_READ = 4096

SPARE = ".s-"  # the name prefix of a spare (see spares.py)
EVICTED = ".evicted"  # the name suffix of an eviction marker (see sessions.py)


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
    raw = os.pread(lock, _RECORD.size, 0)
    if len(raw) < _RECORD.size:
        return 0, 0, None
    counter, epoch, keys, boot = _RECORD.unpack(raw)
    return counter, epoch, keys if boot == boot_id() else None


def store(lock: int, counter: int, epoch: int, keys: int | None) -> None:
    boot = bytes(_RECORD.size - 24) if keys is None else boot_id()
    os.pwrite(lock, _RECORD.pack(counter, epoch, max(keys or 0, 0), boot), 0)


def count_keys(lock: int, delta: int = 0, exact: int | None = None) -> None:
    """Lower the directory's bound on key files by ``-delta`` after
    unlinks (only after them: it must stay an upper bound), or set it to
    ``exact`` after a full scan under the exclusive mutex."""
    counter, epoch, keys = load(lock)
    store(lock, counter, epoch, exact if exact is not None else None if keys is None else keys + delta)


# -- key files -----------------------------------------------------------------
def probe(dir_fd: int, rel: str, name: str) -> tuple[Entry | None, bool]:
    """(the live entry stored as ``name`` in the directory ``dir_fd`` of key
    prefix ``rel``, or None; whether a dead entry is there)."""
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
        if flags & EPHEMERAL and not alive(fd):
            return None, True
    finally:
        os.close(fd)
    segment = data[HEADER.size:HEADER.size + stored].decode() if stored else name
    return Entry(
        rel + segment,
        data[HEADER.size + stored:end],
        version,
        seq if flags & SEQUENTIAL else None,
        owner.decode() if flags & EPHEMERAL else None,
    ), False
