"""RESP2: encoding commands, decoding replies, and one bounded request/reply exchange on a socket."""

from __future__ import annotations

import socket
import time


class _RespError(Exception):
    """An error reply, or bytes that are not RESP."""


class _Incomplete(Exception):
    pass


def _pack(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def _parse(buf: bytearray, pos: int) -> tuple[object, int]:
    """One RESP2 reply from ``buf`` at ``pos``: (reply, next position)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line, pos = buf[pos:pos + 1], bytes(buf[pos + 1:end]), end + 2
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos:pos + size]), pos + size + 2
    if kind == b"*":
        items = []
        for _ in range(max(int(line), 0)):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == b":":
        return int(line), pos
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return _RespError(line.decode(errors="replace")), pos
    raise _RespError(f"unexpected byte {bytes(kind)!r} from the server")


class _Reader:
    """Accumulates bytes from a socket and yields complete replies."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def replies(self, data: bytes) -> list[object]:
        self.buf += data
        out: list[object] = []
        pos = 0
        try:
            while pos < len(self.buf):
                reply, pos = _parse(self.buf, pos)
                out.append(reply)
        except _Incomplete:
            pass
        del self.buf[:pos]
        return out


def _left(until: float, cap: float | None = None) -> float:
    """Seconds until ``until`` (at most ``cap``); TimeoutError once it passed."""
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("the server did not answer in time")
    return left if cap is None else min(left, cap)


def _exchange(sock: socket.socket, payload: bytes, count: int, until: float) -> list[object]:
    """Send ``payload`` (``count`` commands) and read their ``count`` replies,
    every step bounded by ``until``; OSError (TimeoutError once ``until``
    passed) if the server cannot be reached or does not answer in time."""
    set_at = time.monotonic()
    sock.settimeout(_left(until))
    sock.sendall(payload)
    reader = _Reader()
    replies: list[object] = []
    while len(replies) < count:
        now = time.monotonic()
        if now - set_at > 0.001:  # else the timeout set just before is still right, within 1 ms
            set_at = now
            sock.settimeout(_left(until))
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        replies += reader.replies(data)
    if len(replies) != count or reader.buf:
        raise ConnectionResetError("redis sent more replies than commands")
    return replies


class _AuthFailed(Exception):
    """The server refused the credentials (not retryable: BackendError)."""

