"""memcached's meta protocol (1.6 and newer): building commands, reading
replies, and one bounded request/reply exchange on a socket.

Only what the backend sends is built here: ``mg`` (get), ``ms`` (set, add
or replace, optionally compared with a CAS value), ``md`` (delete,
optionally compared), the plain ``version``, and ``stats`` once per new
connection (:func:`server_instance`). Every meta command gets exactly one
reply (no ``q`` flag), so a pipeline of N commands is read as N replies.
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


class Replies(list[Reply]):
    """The replies to one pipeline, and :attr:`server`: the server instance
    that sent them (see :func:`server_instance`)."""

    server: str = ""


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


def server_instance(sock: socket.socket, until: float) -> str:
    """Which run of the server ``sock`` talks to: its pid and start time,
    from ``stats``. CAS values count from 1 again in each run, so a CAS
    value means something only together with the run that issued it."""
    sock.settimeout(left(until))
    sock.sendall(b"stats\r\n")
    buf = bytearray()
    while not buf.endswith(b"END\r\n"):
        if buf.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")) and buf.endswith(b"\r\n"):
            raise MetaError(bytes(buf).strip().decode(errors="replace"))
        sock.settimeout(left(until))
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        buf += data
        if len(buf) > 1 << 20:
            raise MetaError("memcached sent more than 1 MiB of stats")
    stats = dict(line.split(b" ")[1:3] for line in bytes(buf).split(b"\r\n") if line.startswith(b"STAT "))
    try:
        started = int(stats[b"time"]) - int(stats[b"uptime"])
        return f"{int(stats[b'pid'])}@{started}"
    except (KeyError, ValueError):
        raise MetaError("memcached's stats name no pid, time and uptime") from None


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
                if buf.startswith(b"HD\r\n", pos):  # a session check's reply (a listing sends one per owner)
                    replies.append(Reply(b"HD", []))
                    pos += 4
                    continue
                reply, pos = _parse(buf, pos)
                replies.append(reply)
        except _Incomplete:
            pass
        except ValueError as exc:
            raise MetaError(f"memcached sent a malformed reply ({exc})") from None
    if pos != len(buf):
        raise MetaError("memcached sent more replies than commands")
    return replies
