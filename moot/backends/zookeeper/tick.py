"""The server's tick, for sessions that end within their TTL.

ZooKeeper expires sessions on its tick: a session is due at the first
multiple of ``tickTime`` after its last contact plus its timeout, so a
crashed client's session (and every lock it held) outlives the timeout by up
to one tick: 2 s on a server as shipped. A client cannot read ``tickTime``
(the ``conf`` command is not enabled by default), but a server grants no
session timeout below ``minSessionTimeout``, which is two ticks unless the
operator set it. One throwaway handshake asking for a 1 ms timeout, closed at
once, tells it; the backend then asks each session for its TTL less one
tick, so that the session ends between TTL - tick and TTL after the last
contact. A ``minSessionTimeout`` set above two ticks overestimates the tick:
sessions end earlier, never later.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Callable, Sequence

from kazoo.protocol.serialization import Close, Connect

from moot.errors import ConnectionLost

log = logging.getLogger("moot.backends.zookeeper")

PROBE_TIMEOUT = 1.0  # seconds one host may take to tell its tick (a serving server: milliseconds)
_LENGTH = struct.Struct("!i")
_HEADER = struct.Struct("!ii")  # xid, request type
_FRESH_PASSWORD = b"\x00" * 16  # what a client sends when it asks for a new session
_LARGEST_ANSWER = 1 << 16


def server_tick(hosts: Sequence[tuple[str, int]], left: Callable[[], float],
                tls: ssl.SSLContext | None) -> float | None:
    """Seconds: the tick of the first of ``hosts`` that tells it, each within
    :data:`PROBE_TIMEOUT` and what ``left()`` grants of the caller's
    deadline; None if none does."""
    for host, port in hosts:
        try:
            smallest = smallest_session_timeout((host, port), min(left(), PROBE_TIMEOUT), tls, host)
        except (OSError, ValueError, ConnectionLost) as exc:
            log.debug("ZooKeeper at %s:%s did not tell its tick (%s)", host, port, type(exc).__name__)
            continue
        return smallest / 2
    return None


def smallest_session_timeout(peer: tuple[str, int], timeout: float, tls: ssl.SSLContext | None,
                             server_hostname: str) -> float:
    """Seconds: the shortest session timeout the server at ``peer`` grants,
    read from a handshake that asks for 1 ms; that session is closed at once.
    OSError (or ValueError on a garbled answer) when it cannot be read within
    ``timeout``."""
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection(peer, timeout=timeout))
        if tls is not None:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=server_hostname))
        hello = Connect(0, 0, 1, 0, _FRESH_PASSWORD, False).serialize()
        sock.sendall(_LENGTH.pack(len(hello)) + hello)
        answer, _ = Connect.deserialize(_frame(sock), 0)
        if answer.time_out <= 0:  # the server refused the session (e.g. a read-only server)
            raise ValueError("no session granted")
        close = _HEADER.pack(1, Close.type)
        sock.sendall(_LENGTH.pack(len(close)) + close)
        with contextlib.suppress(OSError):
            _frame(sock)  # the close's reply: the session has ended
        return float(answer.time_out) / 1000.0


def _frame(sock: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(_exactly(sock, _LENGTH.size))
    if not 0 < length <= _LARGEST_ANSWER:
        raise ValueError(f"a frame of {length} bytes")
    return _exactly(sock, length)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data
