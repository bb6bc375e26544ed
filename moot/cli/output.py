"""What the ``moot`` command prints: durations, tables, JSON, and one-line
messages with the URL's password scrubbed out."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import Any

import moot
from moot.url import parse_url

#: What a hidden password is replaced with (as in :func:`moot.url.redact`).
HIDDEN = "***"


def age(seconds: float | None) -> str:
    """A duration for people: ``0.4s``, ``12.0s``, ``3m05s``, ``2h03m``, ``4d02h``."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def elapsed(since: float | None, now: float) -> float | None:
    """Seconds from ``since`` to ``now`` (never negative: clocks of hosts differ), or None."""
    return None if since is None else round(max(0.0, now - since), 3)


#: Characters shown escaped: controls (a newline or an escape sequence would
#: break the table or drive the terminal), format characters (zero-width
#: joiners, bidirectional overrides that reorder what follows), line and
#: paragraph separators, lone surrogates.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """``text`` safe to print in a table cell or a header: every control or
    format character as a Python escape (``\\n``, ``\\x1b``, ``\\u202e``), and
    a backslash as ``\\\\`` so an escape and the same characters typed in a
    name differ. Other characters (accents, CJK, emoji) are kept."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif unicodedata.category(char) in _ESCAPED_CATEGORIES:
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def display_width(text: str) -> int:
    """Columns ``text`` (already :func:`printable`) takes on a terminal: two
    for wide and full-width characters (CJK, most emoji), none for combining
    marks, one for the others."""
    if text.isascii():
        return len(text)
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, aligned by display width;
    ``None`` cells print as ``-``; every cell goes through :func:`printable`."""
    cells = [[printable(str(h)) for h in headers]] + [
        ["-" if c is None else printable(str(c)) for c in row] for row in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c + " " * (w - display_width(c)) for c, w in zip(row, widths, strict=True))
                     .rstrip() for row in cells)


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return {"hex": bytes(value).hex()}
    return repr(value)


def pretty_json(data: object) -> str:
    """``data`` as indented JSON (bytes as ``{"hex": ...}``)."""
    return json.dumps(data, indent=2, default=_json_default)


def compact_json(data: object) -> str:
    """``data`` as JSON on one line (bytes as ``{"hex": ...}``)."""
    return json.dumps(data, separators=(",", ":"), default=_json_default)


def capabilities_text(capabilities: Any) -> str:
    """A member's capabilities in one table cell."""
    if capabilities is None:
        return "-"
    if isinstance(capabilities, bytes | bytearray):
        return repr(bytes(capabilities))
    return compact_json(capabilities)


def url_secret(url: str | None) -> str | None:
    """The password ``url`` carries, if any (None for a URL that does not parse)."""
    if not url:
        return None
    try:
        return parse_url(url).password
    except moot.MootError:
        return None


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, HIDDEN) if secret else text


def one_line(message: str, url: str | None = None) -> str:
    """``message`` on one line, with the password of ``url`` (if any) scrubbed out."""
    return scrub(" ".join(message.split()), url_secret(url))
