"""memcached's meta protocol (1.6 and newer): building commands, reading
replies, and one bounded request/reply exchange on a socket.

Only what the backend sends is built here: ``mg`` (get), ``ms`` (set, add
or replace, optionally compared with a CAS value), ``md`` (delete,
optionally compared) and the plain ``version``. Every command gets exactly
one reply (no ``q`` flag), so a pipeline of N commands is read as N replies.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass


class MetaError(Exception):
    """An error reply (``ERROR``, ``CLIENT_ERROR``, ``SERVER_ERROR``), or
    bytes that are not the meta protocol."""


@dataclass(slots=True)
class Reply:
    """One reply: its code (``HD``, ``VA``, ``EN``, ``NF``, ``NS``, ``EX``,
    ``VERSION``...), its return flags and, for ``VA``, the value."""

    code: bytes
    flags: list[bytes]
    value: bytes | None = None

    def flag(self, letter: bytes) -> bytes | None:
        """The token of return flag ``letter`` (e.g. ``b"c"``: the CAS value), None if absent."""
        for item in self.flags:
            if item[:1] == letter:
                return item[1:]
        return None

    @property
    def cas(self) -> int:
        token = self.flag(b"c")
        if token is None:
            raise MetaError(f"memcached sent no CAS value with {self.code!r}")
        return int(token)


def mg(key: bytes, flags: bytes = b"") -> bytes:
    return b"mg %s %s\r\n" % (key, flags)


def ms(key: bytes, value: bytes, flags: bytes = b"") -> bytes:
    return b"ms %s %d %s\r\n%s\r\n" % (key, len(value), flags, value)


def md(key: bytes, flags: bytes = b"") -> bytes:
    return b"md %s %s\r\n" % (key, flags)


class _Incomplete(Exception):
    pass


def _parse(buf: bytearray, pos: int) -> tuple[Reply | MetaError, int]:
    """One reply from ``buf`` at ``pos``: (reply or error reply, next position)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    line = bytes(buf[pos:end])
    pos = end + 2
    code, _, rest = line.partition(b" ")
    if code == b"VA":
        size_text, _, flags = rest.partition(b" ")
        size = int(size_text)
        if len(buf) < pos + size + 2:
            raise _Incomplete
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise MetaError("memcached sent a value without its end of line")
        return Reply(code, flags.split(), bytes(buf[pos:pos + size])), pos + size + 2
    if code in (b"HD", b"EN", b"NF", b"NS", b"EX", b"MN", b"VERSION", b"STORED"):
        return Reply(code, rest.split()), pos
    if code in (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"):
        return MetaError(line.decode(errors="replace")), pos
    raise MetaError(f"memcached sent an unexpected reply {line[:60]!r}")


def left(until: float, cap: float | None = None) -> float:
    """Seconds until ``until`` (at most ``cap``); TimeoutError once it passed."""
    remaining = until - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the server did not answer in time")
    return remaining if cap is None else min(remaining, cap)


def exchange(sock: socket.socket, payload: bytes, count: int, until: float) -> list[Reply | MetaError]:
    """Send ``payload`` (``count`` commands) and read their ``count`` replies,
    every step bounded by ``until``; OSError (TimeoutError once ``until``
    passed) if the server cannot be reached or does not answer in time,
    MetaError if it speaks something else. Error replies come back as
    MetaError values, in their places."""
    set_at = time.monotonic()
    sock.settimeout(left(until))
    sock.sendall(payload)
    buf = bytearray()
    replies: list[Reply | MetaError] = []
    pos = 0
    while len(replies) < count:
        now = time.monotonic()
        if now - set_at > 0.001:  # else the timeout set just before is still right, within 1 ms
            set_at = now
            sock.settimeout(left(until))
        data = sock.recv(262144)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        buf += data
        try:
            while len(replies) < count:
                reply, pos = _parse(buf, pos)
                replies.append(reply)
        except _Incomplete:
            pass
        except ValueError as exc:
            raise MetaError(f"memcached sent a malformed reply ({exc})") from None
    if pos != len(buf):
        raise MetaError("memcached sent more replies than commands")
    return replies
