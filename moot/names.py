"""User-given names (locks, groups, elections, members) and the key segments
they become.

A name is a non-empty ``str`` of at most 256 UTF-8 bytes; any character is
allowed. :func:`segment` escapes a name into one key segment made only of
``[A-Za-z0-9_%-]``, so no name can climb out of its place (``..``, ``/``) on
any backend; :func:`unsegment` reverses it.
"""

from __future__ import annotations

import re

from moot.errors import InvalidName

MAX_NAME_BYTES = 256
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ALL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a valid name, else raise :class:`InvalidName`."""
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidName(f"{what} must not be empty")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise InvalidName(f"{what} is {size} bytes long in UTF-8; the limit is {MAX_NAME_BYTES}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"{what} {name!r} is not valid Unicode text (lone surrogate)") from None
    return name


def segment(name: str) -> str:
    """Escape a (checked) name into one safe key segment."""
    if _ALL_SAFE.fullmatch(name):  # the common case, kept cheap: listings unescape every name they return
        return name
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in name.encode("utf-8"))


def _unescaped(text: str) -> bool:
    """True if :func:`segment` left ``text`` (one or more segments) as the name was."""
    return "%" not in text and text.isascii()


def unsegment_all(texts: list[str]) -> set[str]:
    """The names that :func:`segment` escaped into ``texts``; one check for
    all of them in the common case where none was escaped (a listing of
    thousands of member ids)."""
    if _unescaped("".join(texts)):
        return set(texts)
    return {unsegment(text) for text in texts}


def unsegment(text: str) -> str:
    """The name that :func:`segment` escaped into ``text``."""
    if _unescaped(text):
        return text
    out = bytearray()
    i = 0
    raw = text.encode("ascii")
    while i < len(raw):
        if raw[i] == ord("%"):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8")
