"""The WebSocket framing (RFC 6455) the gateway's ``/v3/watch`` speaks to carry
many watches on one connection.

Why a WebSocket: etcd's gateway (3.4, built with Go before 1.21) answers a
streamed POST only once its request body has ended, so a POST stream
carries only the watches it was opened with; its WebSocket proxy reads
requests and writes answers at the same time, one JSON message per frame.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct

from moot.backends.etcd.http import _Json, _StreamLost

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _CLOSE, _PING, _PONG, _CONTINUATION = 0x1, 0x8, 0x9, 0xA, 0x0


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as a client's must be)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    mask = os.urandom(4)
    masked = int.from_bytes(payload, "big") ^ int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    return head + mask + masked.to_bytes(size, "big")


def message(request: _Json) -> bytes:
    """``request`` as one text frame."""
    return frame(_TEXT, json.dumps(request).encode())


class Frames:
    """Incremental decoder of the server's side: the handshake's answer, then
    frames into JSON messages. ``replies`` collects the frames owed to the
    server (pongs), to be sent by the caller."""

    def __init__(self, key: str):
        self._accept = _accept(key)
        self._raw = bytearray()
        self.upgraded = False
        self._fragments = bytearray()
        self.replies: list[bytes] = []

    def feed(self, data: bytes) -> list[_Json]:
        """The messages completed by ``data``; raises _StreamLost if the
        upgrade was refused, the framing is broken or the server closed."""
        self._raw += data
        if not self.upgraded:
            end = self._raw.find(b"\r\n\r\n")
            if end < 0:
                return []
            head = bytes(self._raw[:end]).decode("latin-1").split("\r\n")
            if head[0].split(" ")[1:2] != ["101"]:
                raise _StreamLost(f"no WebSocket on /v3/watch: {head[0]}")
            fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head)}
            if fields.get("sec-websocket-accept") != self._accept:
                raise _StreamLost("the WebSocket upgrade answered with the wrong key")
            del self._raw[: end + 4]
            self.upgraded = True
        messages = []
        while (payload := self._next()) is not None:
            opcode, fin, body = payload
            if opcode == _PING:
                self.replies.append(frame(_PONG, body))
            elif opcode == _CLOSE:
                raise _StreamLost(f"the server closed the watch stream: {body[2:].decode('utf-8', 'replace')}")
            elif opcode in (_TEXT, _CONTINUATION):
                self._fragments += body
                if fin:
                    text, self._fragments = bytes(self._fragments), bytearray()
                    messages.append(self._decode(text))
        return messages

    def _next(self) -> tuple[int, bool, bytes] | None:
        raw = self._raw
        if len(raw) < 2:
            return None
        fin, opcode, masked, size = raw[0] & 0x80, raw[0] & 0x0F, raw[1] & 0x80, raw[1] & 0x7F
        start = 2
        if size == 126:
            if len(raw) < 4:
                return None
            size, start = struct.unpack_from("!H", raw, 2)[0], 4
        elif size == 127:
            if len(raw) < 10:
                return None
            size, start = struct.unpack_from("!Q", raw, 2)[0], 10
        if masked:
            raise _StreamLost("the server sent a masked frame")
        if len(raw) < start + size:
            return None
        body = bytes(raw[start : start + size])
        del raw[: start + size]
        return opcode, bool(fin), body

    @staticmethod
    def _decode(text: bytes) -> _Json:
        try:
            value = json.loads(text)
        except ValueError:
            raise _StreamLost(f"not JSON: {text[:80]!r}") from None
        result = value.get("result") if isinstance(value, dict) else None
        if not isinstance(result, dict):
            raise _StreamLost(str(value.get("error") if isinstance(value, dict) else value))
        return result
