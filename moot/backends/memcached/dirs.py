"""The key layout and the directory item: every key directly under one
directory lives in ONE memcached item, changed only under its CAS value.

A *directory* is the part of a key up to and including its last ``/``
(``""`` for the root); the rest is the key's *leaf*. The directory item
``moot:d:<directory>`` holds the directory's counter (versions and
sequence numbers come from it) and its entries (leaf, version, seq, owner
session, value). The names of its subdirectories (for recursive listing)
are appended, one line each, to an item of their own,
``moot:n:<directory>`` (then ``moot:n:<directory>#1`` and on, once one is
full): naming a new subdirectory sends a few bytes,
however many names there are (items written by moot before this layout
also hold names, which are still read). Values larger than
:data:`INLINE_MAX` bytes are *spilled* to an item of their own,
``moot:v:<hash of directory>:<version>``, written before the directory
item names it. A memcached key longer than 250 bytes
(or with bytes memcached refuses in a key) is replaced by a SHA-256 of the
text, under another prefix; the full directory is stored in the item and
checked on every read, so two directories can never share an item.
A directory item over :data:`COMPRESS_OVER` bytes is stored compressed.
See docs/design/memcached.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
import zlib
from typing import NamedTuple

from moot.backends.base import Entry
from moot.backends.memcached.meta import MetaError
from moot.errors import InvalidArgument

KP = b"moot:"
#: Values up to this many bytes live in the directory item; larger ones are spilled.
INLINE_MAX = 1024
_MAX_KEY = 250  # memcached's longest key
_PLAIN = re.compile(rb"[\x21-\x7e]*")  # what memcached takes in a key (no space, no control byte)
_KEY = re.compile(r"[A-Za-z0-9_%/-]*")  # the contract's key alphabet (moot/backends/base.py)
_NAME = re.compile(r"[A-Za-z0-9_%-]*")  # one segment of a key (a key may hold an empty one: "a//b")
_MAGIC = b"moot-dir-1"
#: A directory whose item would be larger than this is stored zlib-compressed, after this
#: first line (the raw item's first line starts with _MAGIC and a space: the two never mix).
#: Below memcached's default item limit (1 MiB): an item that a moot which predates compression
#: can store is stored as it would store it.
COMPRESS_OVER = 1_000_000
_ZMAGIC = b"moot-dir-z1\n"
_tuple = tuple.__new__  # builds a Record without its __new__'s Python-level call


def mkey(kind: bytes, text: str) -> bytes:
    """The memcached key of ``text`` (a directory, a session id) of ``kind``
    (``d``, ``s``): plain when memcached takes it, else hashed (kind ``D``, ``S``)."""
    raw = text.encode()
    plain = KP + kind + b":" + raw
    if len(plain) <= _MAX_KEY and _PLAIN.fullmatch(raw):
        return plain
    return KP + kind.upper() + b":" + hashlib.sha256(raw).hexdigest().encode()


def names_key(directory: str, page: int = 0) -> bytes:
    """The item that ``directory``'s subdirectories are appended to: page 0,
    then, once a page is full (memcached refuses to make an item larger than
    its limit), page 1, and so on. A page's key holds a ``#``, which no
    directory does, so no page is another directory's item."""
    return mkey(b"n", directory if page == 0 else f"{directory}#{page}")


def _hashed(directory: str, page: int) -> bool:
    return names_key(directory, page)[len(KP):len(KP) + 1] == b"N"


def name_line(directory: str, name: str, page: int = 0) -> bytes:
    """The line appended to page ``page`` of ``directory``'s names for
    subdirectory ``name``: the name alone, or the subdirectory's full path
    when the page's key is hashed (so a reader can check that the item is
    this directory's)."""
    return (directory + name if _hashed(directory, page) else name).encode() + b"\n"


def decode_names(directory: str, raw: bytes, page: int = 0) -> frozenset[str]:
    """The subdirectory names in page ``page`` of ``directory``'s names,
    ``raw`` (a name appended more than once counts once); MetaError if it is
    not one."""
    hashed = _hashed(directory, page)
    if raw and not raw.endswith(b"\n"):
        raise MetaError(f"the names item of directory {directory!r:.80} is cut short")
    names = set()
    for line in raw.split(b"\n")[:-1]:
        try:
            text = line.decode()
        except UnicodeDecodeError:
            text = "/"
        if hashed:
            if not text.startswith(directory):
                raise MetaError(f"the names item of directory {directory!r:.80} holds {line[:80]!r}")
            text = text[len(directory):]
        if not _NAME.fullmatch(text):
            raise MetaError(f"the names item of directory {directory!r:.80} is not moot's ({line[:80]!r})")
        names.add(text)
    return frozenset(names)


def spill_key(directory: str, version: int) -> bytes:
    """The item of the value spilled by the write that made ``version`` in ``directory``."""
    return KP + b"v:" + hashlib.sha256(directory.encode()).hexdigest()[:40].encode() + b":%d" % version


def split_key(key: str) -> tuple[str, str]:
    """(directory, leaf) of a key; InvalidArgument for what is no key."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or not key or key.endswith("/"):
        raise InvalidArgument(f"{key!r:.80} is not a key (segments of [A-Za-z0-9_%-] joined by '/')")
    cut = key.rfind("/") + 1
    return key[:cut], key[cut:]


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _KEY.fullmatch(prefix):
        raise InvalidArgument(f"{prefix!r:.80} is not a key prefix (segments of [A-Za-z0-9_%-] and '/')")
    return prefix


def parent(directory: str) -> tuple[str, str]:
    """(parent directory, own name) of a non-root directory: ``a/b/`` -> (``a/``, ``b``)."""
    cut = directory.rfind("/", 0, len(directory) - 1) + 1
    return directory[:cut], directory[cut:-1]


class Record(NamedTuple):
    """One entry of a directory. ``value`` is None while a spilled value is
    not loaded. A tuple: a read of a thousand entries builds a thousand of
    them, and a tuple is built several times faster than a frozen dataclass."""

    version: int
    seq: int | None
    owner: str | None
    size: int
    spilled: bool
    value: bytes | None

    def entry(self, key: str, value: bytes | None = None) -> Entry:
        loaded = self.value if value is None else value
        assert loaded is not None
        return Entry(key, loaded, self.version, self.seq, self.owner)


def record(version: int, seq: int | None, owner: str | None, value: bytes) -> Record:
    """A new record; a value over INLINE_MAX is marked spilled (the caller writes its item)."""
    spilled = len(value) > INLINE_MAX
    return Record(version, seq, owner, len(value), spilled, value)


@dataclasses.dataclass(slots=True)
class Directory:
    """One directory item as read (``cas`` 0: the item does not exist), and
    the server run that ``cas`` came from (CAS values restart with the server)."""

    path: str
    counter: int = 0
    entries: dict[str, Record] = dataclasses.field(default_factory=dict)
    subdirs: frozenset[str] = frozenset()  # names written by moot before names items (kept as read)
    cas: int = 0
    server: str = ""

    def copy(self) -> Directory:
        return Directory(self.path, self.counter, dict(self.entries), self.subdirs, self.cas, self.server)

    def bump(self) -> int:
        """Advance the counter: the next version or seq, at least the
        client's clock in microseconds (docs/design/memcached.md, "Fencing")."""
        self.counter = max(self.counter + 1, time.time_ns() // 1000)
        return self.counter

    def owners(self) -> set[str]:
        return {r.owner for r in self.entries.values() if r.owner is not None}

    def versions(self) -> dict[str, int]:
        return {leaf: r.version for leaf, r in self.entries.items()}

    def encode(self) -> bytes:
        out = [b"%s %d %d %d %s\n" % (_MAGIC, self.counter, len(self.entries), len(self.subdirs),
                                      self.path.encode())]
        for leaf, r in self.entries.items():
            out.append(b"%s %d %s %s %s %d\n" % (
                leaf.encode(), r.version, b"-" if r.seq is None else b"%d" % r.seq,
                b"-" if r.owner is None else r.owner.encode(), b"s" if r.spilled else b"i", r.size))
            if not r.spilled:
                assert r.value is not None
                out.append(r.value)
        out.extend(name.encode() + b"\n" for name in sorted(self.subdirs))
        raw = b"".join(out)
        if len(raw) > COMPRESS_OVER:
            return _ZMAGIC + zlib.compress(raw, 1)
        return raw


def decode(path: str, raw: bytes, cas: int) -> Directory:
    """The directory item ``raw`` read for ``path``; MetaError if it is not
    one, or is another directory's (a hashed key's collision)."""
    try:
        if raw.startswith(_ZMAGIC):
            raw = zlib.decompress(raw[len(_ZMAGIC):])
        end = raw.index(b"\n")
        magic, counter, count, subcount, stored = raw[:end].split(b" ", 4)
        if magic != _MAGIC:
            raise ValueError("not a directory item")
        if stored.decode() != path:
            raise MetaError(f"the item of directory {path!r:.80} holds {stored[:80]!r}")
        pos = end + 1
        entries: dict[str, Record] = {}
        for _ in range(int(count)):
            end = raw.index(b"\n", pos)
            leaf, version, seq, owner, kind, size_text = raw[pos:end].split(b" ")
            size = int(size_text)
            pos = end + 1
            value = None
            if kind == b"i":
                value = raw[pos:pos + size]
                if len(value) != size:
                    raise ValueError("a value is cut short")
                pos += size
            entries[leaf.decode()] = _tuple(Record, (int(version), None if seq == b"-" else int(seq),
                                                     None if owner == b"-" else owner.decode(), size,
                                                     kind == b"s", value))
        subdirs = []
        for _ in range(int(subcount)):
            end = raw.index(b"\n", pos)
            subdirs.append(raw[pos:end].decode())
            pos = end + 1
        if pos != len(raw):
            raise ValueError("bytes after the last subdirectory")
    except (ValueError, UnicodeDecodeError, zlib.error) as exc:
        raise MetaError(f"the item of directory {path!r:.80} is not a moot directory ({exc})") from None
    return Directory(path, int(counter), entries, frozenset(subdirs), cas)
