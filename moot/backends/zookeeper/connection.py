"""One kazoo client and what kazoo keeps to itself: the session timeout the
server granted, whether every host refused (the connection, or its TLS
handshake for good), the sockets to close after a fork; the record of a moot
session; kazoo's log with credentials hidden."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import socket
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionDropped
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import Connect
from kazoo.protocol.states import WatchedEvent

from moot.backends._support.tls import handshake_failure
from moot.backends.zookeeper.handler import _real_socket
from moot.errors import TLSFailed
from moot.realthreads import threading

_U64 = (1 << 64) - 1


class _Connection(ConnectionHandler):  # type: ignore[misc]
    """kazoo's connection handler, noting what kazoo keeps to itself: the
    session timeout the server granted, and whether every host refused the
    connection or failed its TLS handshake for a reason a retry cannot fix."""

    _socket: socket.socket | None
    _read_sock: socket.socket | None
    _write_sock: socket.socket | None

    def __init__(self, client: KazooClient):
        super().__init__(client, client._conn_retry.copy(), logger=client.logger)
        #: the session timeout (ms) the server granted at the last connection
        self.granted_ms: int | None = None
        #: rounds over all the hosts in which every connection was refused
        self.refused_rounds = 0
        #: rounds in which no host name resolved
        self.unresolved_rounds = 0
        #: set after a round in which every host refused the connection or
        #: the TLS handshake (at least one the handshake) for good
        self.tls_failure: TLSFailed | None = None
        #: the host name (as the URL gives it) of the last connection made
        self.host: str | None = None
        self._round: list[TLSFailed | bool] = []  # per host: refused (True), TLS failure, other (False)

    def _connect_loop(self, retry: Any) -> Any:
        self._round = []
        try:
            return super()._connect_loop(retry)
        finally:
            if self._round and all(outcome is True for outcome in self._round):
                self.refused_rounds += 1
            elif self._round and all(outcome is not False for outcome in self._round):
                self.tls_failure = next(f for f in self._round if isinstance(f, TLSFailed))

    def _expand_client_hosts(self) -> list[tuple[str, str, int]]:
        """(host, address, port) of every address of every host, resolved
        with the OS's resolver (eventlet's green one would need a hub on
        this thread)."""
        addresses = []
        for host, port in self.client.hosts:
            try:
                found = _real_socket.getaddrinfo(host.strip(), port, 0, 0, _real_socket.IPPROTO_TCP)
            except OSError as exc:
                self.logger.warning("Cannot resolve %s: %s", host, exc)
                continue
            addresses += [(host.strip(), info[4][0], info[4][1]) for info in found]
        if self.client.randomize_hosts:
            random.shuffle(addresses)
        if not addresses:
            self.unresolved_rounds += 1
        return addresses

    def _connect(self, host: str, hostip: str, port: int) -> Any:
        try:
            answer = super()._connect(host, hostip, port)
        except ConnectionDropped as exc:  # kazoo's wrapper of the socket error (the TLS one included)
            failure = handshake_failure(exc, f"{host}:{port}") if self.client.use_ssl else None
            self._round.append(failure or isinstance(exc.__context__, ConnectionRefusedError))
            raise
        except BaseException:
            self._round.append(False)
            raise
        self._round.append(False)
        self.host = host
        return answer

    def _invoke(self, timeout: float, request: Any, xid: int | None = None) -> Any:
        if isinstance(request, Connect):
            # kazoo waits up to the whole session timeout for this answer; a
            # server that accepted the connection but does not serve yet (one
            # starting up, say) would hold the reconnection that long, while
            # the session may expire. A serving server answers in milliseconds.
            timeout = min(timeout, max(2.0, self.client._session_timeout / 5000))
        answer = super()._invoke(timeout, request, xid)
        if isinstance(request, Connect):  # read before kazoo reports CONNECTED
            self.granted_ms = answer[0].time_out
        return answer

    def cut(self) -> None:
        """Break the TCP connection now (wakes kazoo's thread wherever it waits on it)."""
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def forget(self) -> None:
        """Close this process's copies of the connection's file descriptors,
        without any I/O on them (after fork: the parent keeps its connection)."""
        for sock in (self._socket, self._read_sock, self._write_sock):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                fd = sock.detach()  # the socket object forgets its fd: never closed twice
                if fd >= 0:
                    os.close(fd)
        self._socket = self._read_sock = self._write_sock = None


class _Redact(logging.Filter):
    """Hides the digest credentials that kazoo logs (at DEBUG) when it logs in."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, ()
        return True


class _KazooLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What kazoo is given as its logger: its warnings arrive as INFO.

    kazoo warns of every step of a reconnection ("Connection dropped: ...
    Connection refused" once per try, "Transition to CONNECTING", "Session
    has expired"): a dozen lines for one server restart, on the stderr of
    an application that configured no logging. moot retries those itself
    and says what came of it once, in its own words (the ConnectionLost of
    the call, the heartbeat's and the session's warnings). kazoo's lines
    stay available to an application that shows INFO (or DEBUG) from
    ``moot.backends.zookeeper.kazoo``; its errors (a bug in its loop) stay
    errors."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if level == logging.WARNING:
            level = logging.INFO
        kwargs.setdefault("stacklevel", 2)  # the record names kazoo's line, not this one
        super().log(level, msg, *args, **kwargs)


_redact = _Redact()
#: kazoo's own messages go here, with every credential moot gave it hidden.
_kazoo_log = logging.getLogger("moot.backends.zookeeper.kazoo")
_kazoo_log.addFilter(_redact)
_kazoo_adapter = _KazooLog(_kazoo_log, {})


def _kazoo_logger(auth: list[tuple[str, str]]) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    for _scheme, credential in auth:
        _redact.secrets.add(credential)
        password = credential.partition(":")[2]
        if password:
            _redact.secrets.add(password)
    return _kazoo_adapter

Result = Any  # a kazoo IAsyncResult


def _asked_ms(ttl: float) -> int:
    """The session timeout to ask for: the TTL rounded up to a millisecond."""
    return max(1, math.ceil(ttl * 1000 - 1e-6))


def _hex(session: int) -> str:
    return format(session & _U64, "x")


def _session_int(text: str) -> int | None:
    """The signed 64-bit session id kazoo expects, from its hex form."""
    try:
        value = int(text, 16)
    except ValueError:
        return None
    if not 0 <= value <= _U64:
        return None
    return value - (1 << 64) if value >= 1 << 63 else value



class _Conn:
    """One kazoo client (one ZooKeeper session at a time) and its watch state."""

    def __init__(self, zk: KazooClient, ttl: float, asked_ms: int):
        self.zk = zk
        self.ttl = ttl
        self.asked_ms = asked_ms  # the session timeout asked for the TTL: less one tick (tick.py)
        self.handler: _Connection = zk._connection
        self.watcher: Callable[[WatchedEvent], None] = lambda event: None
        self.live = threading.Event()  # connected (kazoo queues requests while it reconnects); see _await
        self.children: dict[str, set[str]] = {}  # parent path -> children with a data watch
        self.absent: set[str] = set()  # watched key paths armed through their parent

    def session(self) -> int | None:
        client_id = self.zk.client_id
        return client_id[0] if client_id else None

    def granted(self) -> float | None:
        """The session timeout (s) the server granted at the last connection."""
        granted = self.handler.granted_ms
        return granted / 1000.0 if granted else None


class _Session:
    def __init__(self, sid: int, ttl: float):
        self.id = _hex(sid)
        self.sid = sid
        self.ttl = ttl
        self.expired = False
        self.record_gone = False  # its record was found missing: the session counts as ended

