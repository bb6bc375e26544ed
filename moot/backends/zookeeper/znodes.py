"""How keys are laid out as znodes: paths, and the data header that tells a
key (plain or sequential) from a mere parent znode."""

from __future__ import annotations

import re

from moot.backends.base import MAX_VALUE_BYTES
from moot.errors import InvalidArgument

_KEY = b"\x01"  # data header of a key
_SEQ = b"\x02"  # data header of a sequential key, followed by a random tag
_TAG = 8
_SESSIONS = ".sessions"  # not a key segment, so never listed as keys
_SEGMENT = re.compile(r"[A-Za-z0-9_%-]+\Z")


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _is_prefix(key: str) -> bool:
    return not key or key.endswith("/")


def _as_prefix(key: str) -> str:
    """The prefix naming the keys directly under ``key`` ("" for the root)."""
    return key + "/" if key else ""


def _value(value: bytes) -> bytes:
    """``value`` as bytes, refused before any I/O if no server could store it:
    the server drops the connection of a request over its frame limit, which
    would cost a retry loop or the session."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgument(f"values are bytes, not {type(value).__name__}")
    data = bytes(value)
    if len(data) > MAX_VALUE_BYTES:
        raise InvalidArgument(f"a value of {len(data)} bytes is over moot's limit of {MAX_VALUE_BYTES} bytes; "
                              "store large data elsewhere and keep a reference to it here")
    return data


def _header(data: bytes) -> bytes:
    return data[:1] if data[:1] == _KEY else data[: 1 + _TAG]


def _split(data: bytes) -> tuple[bytes, bool] | None:
    """(value, sequential) of a key's znode data; None for a mere parent znode."""
    if data[:1] == _KEY:
        return data[1:], False
    if data[:1] == _SEQ and len(data) > _TAG:
        return data[1 + _TAG:], True
    return None

