"""Values users ask moot to store (group capabilities): checked before any
I/O, and read back without ever failing on what another client wrote.

Capabilities are a JSON value or ``bytes``:

* ``None``, ``bool``, ``int``, finite ``float``, ``str``, and lists (or
  tuples, which come back as lists) and dicts of them, nested at most
  :data:`MAX_DEPTH` containers deep. Dict keys must be ``str``. NaN and
  infinities are refused (other clients' JSON parsers reject them), and so
  is text that is not valid Unicode (a lone surrogate).
* ``bytes`` (or ``bytearray``) as the whole value, stored as hex under a
  marker key; a dict made of that one marker key alone is therefore refused.
* Encoded, at most :data:`MAX_CAPABILITIES_BYTES` bytes (hex doubles the
  size of ``bytes``), so that the stored record stays within
  :data:`moot.backends.base.MAX_VALUE_BYTES` on every backend.

Anything else raises :class:`moot.errors.InvalidArgument` at once, saying
where in the value the problem is. Such a value round-trips exactly: what a
member reads back equals what was given, type for type.

Reading never raises: a stored value that is not what this module writes
(another client's bug, a foreign tool, a truncated write) is returned as a
:class:`RawValue` holding the stored bytes and the reason, in place of the
capabilities.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from moot.backends.base import MAX_VALUE_BYTES
from moot.errors import InvalidArgument

#: The deepest nesting of lists and dicts accepted in capabilities.
MAX_DEPTH = 32
#: Room kept in a stored record for the fields beside the capabilities.
RECORD_ROOM = 1024
#: The largest encoded capabilities accepted, in bytes.
MAX_CAPABILITIES_BYTES = MAX_VALUE_BYTES - RECORD_ROOM

#: Raw bytes capabilities are stored as ``{"__moot_bytes__": "<hex>"}``.
BYTES_MARKER = "__moot_bytes__"


@dataclass(frozen=True)
class RawValue:
    """A stored value that could not be decoded: ``raw`` is exactly what the
    engine holds, ``reason`` says what is wrong with it."""

    raw: bytes = field(repr=False)
    reason: str

    def __repr__(self) -> str:
        head = self.raw[:48]
        more = "..." if len(self.raw) > len(head) else ""
        return f"RawValue({head!r}{more} ({len(self.raw)} bytes), reason={self.reason!r})"


def _where(path: tuple[str, ...]) -> str:
    where = "capabilities" + "".join(path)
    return where if len(where) <= 200 else where[:200] + "..."


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _check_text(text: str, path: tuple[str, ...], what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} in {_where(path)} is not valid Unicode text (lone surrogate)") from None


def _too_large(size: str) -> InvalidArgument:
    return InvalidArgument(f"capabilities encode to {size} bytes; the limit is {MAX_CAPABILITIES_BYTES} "
                           "bytes (bytes values count twice: they are stored as hex); store large data "
                           "elsewhere and put a reference here")


def _check_json(value: Any) -> None:
    """Walk ``value`` without recursion, so no depth can crash the walk, and
    stop as soon as its encoding must exceed the limit, so no shape (shared
    sub-lists, cycles) can make the walk long."""
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(value, 0, ())]
    least = 0  # a lower bound of the encoded size of what was walked
    while stack:
        item, depth, path = stack.pop()
        least += 1
        if least > MAX_CAPABILITIES_BYTES:
            raise _too_large(f"more than {MAX_CAPABILITIES_BYTES}")
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidArgument(f"{_where(path)} is {item!r}; NaN and infinities are not valid JSON")
            continue
        if isinstance(item, str):
            least += len(item)
            if least > MAX_CAPABILITIES_BYTES:
                raise _too_large(f"more than {MAX_CAPABILITIES_BYTES}")
            _check_text(item, path, "a string")
            continue
        if isinstance(item, list | tuple | dict):
            if depth >= MAX_DEPTH:
                raise InvalidArgument(f"capabilities are nested more than {MAX_DEPTH} levels deep "
                                      f"(at {_where(path)}); flatten them")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidArgument(f"dict key {_short(key)} in {_where(path)} is a "
                                              f"{type(key).__name__}; keys must be str")
                    least += len(key) + 3
                    _check_text(key, path, f"dict key {_short(key)}")
                    stack.append((child, depth + 1, (*path, f"[{_short(key)}]")))
            else:
                stack.extend((child, depth + 1, (*path, f"[{i}]")) for i, child in enumerate(item))
            continue
        if isinstance(item, bytes | bytearray):
            raise InvalidArgument(f"{_where(path)} is bytes; bytes are accepted only as the whole "
                                  "capabilities value")
        raise InvalidArgument(f"{_where(path)} is a {type(item).__name__}; capabilities must be "
                              "JSON values (None, bool, int, float, str, list, dict) or bytes")


def encode_capabilities(capabilities: Any) -> bytes:
    """The JSON text (ASCII bytes) that stores ``capabilities``; raises
    InvalidArgument if they are not acceptable (see the module docstring).
    Does no I/O."""
    if isinstance(capabilities, bytes | bytearray):
        if 2 * len(capabilities) > MAX_CAPABILITIES_BYTES:
            raise _too_large(f"at least {2 * len(capabilities)}")
        capabilities = {BYTES_MARKER: bytes(capabilities).hex()}
    else:
        _check_json(capabilities)
        if isinstance(capabilities, dict) and set(capabilities) == {BYTES_MARKER}:
            raise InvalidArgument(f"a dict whose only key is {BYTES_MARKER!r} is reserved for bytes "
                                  "capabilities; pass the bytes themselves")
    try:
        encoded = json.dumps(capabilities, allow_nan=False).encode("ascii")
    except ValueError as exc:  # e.g. an int with more digits than Python converts
        raise InvalidArgument(f"capabilities cannot be encoded as JSON: {exc}") from None
    if len(encoded) > MAX_CAPABILITIES_BYTES:
        raise _too_large(str(len(encoded)))
    return encoded


def _from_json(value: Any, raw: bytes) -> Any:
    """Capabilities from their parsed JSON form (undoing the bytes marker)."""
    if isinstance(value, dict) and set(value) == {BYTES_MARKER}:
        text = value[BYTES_MARKER]
        try:
            return bytes.fromhex(text)
        except (TypeError, ValueError):
            return RawValue(raw, f"{BYTES_MARKER} holds {type(text).__name__} that is not hex")
    return value


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:  # nested deeper than the parser's stack
        return RawValue(raw, "nested too deeply to parse")
    except ValueError as exc:  # includes UnicodeDecodeError
        return RawValue(raw, f"not JSON: {exc}")


def decode_capabilities(raw: bytes) -> Any:
    """The capabilities :func:`encode_capabilities` turned into ``raw``; a
    :class:`RawValue` if ``raw`` is not such a value. Never raises."""
    parsed = _parse(raw)
    return parsed if isinstance(parsed, RawValue) else _from_json(parsed, raw)


def _seconds(value: Any) -> float | None:
    """``value`` as a finite float, None if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def encode_member(capabilities: Any, joined_at: float) -> bytes:
    """A group member's stored record: ``{"capabilities": ..., "joined_at": ...}``.
    Raises InvalidArgument (before any I/O) for unacceptable capabilities."""
    encoded = encode_capabilities(capabilities)
    seconds = _seconds(joined_at)
    if seconds is None:
        raise InvalidArgument(f"joined_at must be a finite number of seconds, not {joined_at!r}")
    return b'{"capabilities": %s, "joined_at": %s}' % (encoded, repr(seconds).encode())


def decode_member(raw: bytes) -> tuple[Any, float]:
    """``(capabilities, joined_at)`` from a stored member record. Never raises:
    a record that is not a JSON object with a ``capabilities`` field gives a
    :class:`RawValue` of the whole record as capabilities; a missing or
    malformed ``joined_at`` gives 0.0."""
    record = _parse(raw)
    if isinstance(record, RawValue):
        return record, 0.0
    if not isinstance(record, dict) or "capabilities" not in record:
        return RawValue(raw, "not a JSON object with a 'capabilities' field"), 0.0
    joined_at = _seconds(record.get("joined_at"))
    return _from_json(record["capabilities"], raw), 0.0 if joined_at is None else joined_at
