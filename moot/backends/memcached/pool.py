"""Connections to the server: how one is opened (TLS, and a login if the
server asks for one), and a bounded pool of them, each used by one call at a time."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from moot.backends._support.loop import readable
from moot.backends._support.tls import closed_after_handshake, handshake_failure
from moot.backends.memcached.meta import MetaError, Reply, exchange, left, server_instance
from moot.realthreads import threading

log = logging.getLogger("moot.backends.memcached")


class LoginRefused(Exception):
    """The server refused the credentials (not retryable: BackendError)."""


def dial(module: Any, address: tuple[str, int], tls: ssl.SSLContext | None, username: str | None,
         password: str | None, until: float, where: str) -> tuple[socket.socket, str]:
    """A new connection made with the socket ``module`` (the application's,
    or the OS's for the poller's real thread), TLS if ``tls``, and the
    login if the server asks for one, all within ``until``; and the server
    run it reached (:func:`~moot.backends.memcached.meta.server_instance`)."""
    sock: socket.socket = module.create_connection(address, timeout=left(until))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock.settimeout(left(until))
            sock = tls.wrap_socket(sock, server_hostname=address[0])
        if username is not None or password is not None:
            _login(sock, f"{username or ''} {password or ''}".encode(), until, where)
        return sock, server_instance(sock, until)
    except OSError as exc:  # a refused client certificate shows at the first read (TLS 1.3)
        sock.close()
        failure = None if tls is None else handshake_failure(exc, where) or closed_after_handshake(
            exc, lambda: module.create_connection(address, timeout=left(until)), tls, address[0], where)
        if failure is None:
            raise
        raise failure from None
    except BaseException:
        sock.close()
        raise


def _login(sock: socket.socket, token: bytes, until: float, where: str) -> None:
    """memcached's text-protocol login (a server run with -Y), sent only when
    the server asks for it: a server without logins would store it as an item."""
    (probe,) = exchange(sock, b"mn\r\n", 1, until)
    if not isinstance(probe, MetaError):
        log.debug("memcached at %s asks for no login; the URL's credentials are not sent", where)
        return
    (done,) = exchange(sock, b"set auth 0 0 %d\r\n%s\r\n" % (len(token), token), 1, until)
    if isinstance(done, MetaError) or done.code != b"STORED":
        raise LoginRefused(f"memcached at {where} refused the credentials")


class NoConnection(TimeoutError):
    """Every pooled connection stayed busy until the call's deadline."""


class ServerChanged(Exception):
    """The pipeline was to run on the server run named, and the connection
    at hand reaches another (the server restarted): nothing was sent."""


class Pool:
    """At most ``size`` connections, each opened by ``open_socket(until)``.
    A connection is kept for the next call unless anything went wrong on it
    (a reply is never awaited twice, and a command whose reply was lost is
    never sent again on it)."""

    def __init__(self, open_socket: Callable[[float], tuple[socket.socket, str]], size: int):
        self._open = open_socket
        self._size = size
        self._lock = threading.Lock()  # real (see moot.realthreads), held for no I/O
        self._idle: list[socket.socket] = []
        self._open_count = 0  # connections open or being opened
        self._all: dict[socket.socket, str] = {}  # every open connection: the server run it reaches
        self._closed = False

    def run(self, payload: bytes, count: int, until: float,
            server: str | None = None) -> tuple[list[Reply | MetaError], str]:
        """The ``count`` replies to ``payload`` (error replies as MetaError
        values), all within ``until`` (monotonic), and the server run that
        sent them. With ``server``, only on a connection to that server run,
        else ServerChanged, before sending."""
        sock = self._checkout(until)
        reached = self._all.get(sock, "")
        if server is not None and reached != server:
            self._checkin(sock)
            raise ServerChanged(f"the connection reaches server run {reached}, not {server}")
        try:
            replies = exchange(sock, payload, count, until)
        except BaseException:
            self._discard(sock)
            raise
        if any(isinstance(r, MetaError) and not str(r).startswith("SERVER_ERROR") for r in replies):
            self._discard(sock)  # after a client error the server may have skipped bytes
        else:
            self._checkin(sock)
        return replies, reached

    def _checkin(self, sock: socket.socket) -> None:
        with self._lock:
            keep = not self._closed
            if keep:
                self._idle.append(sock)
        if not keep:
            self._discard(sock)

    def _checkout(self, until: float) -> socket.socket:
        pause = 0.0005
        while True:
            with self._lock:
                if self._closed:
                    raise ConnectionAbortedError("the backend is closed")
                sock = self._idle.pop() if self._idle else None
                opening = sock is None and self._open_count < self._size
                if opening:
                    self._open_count += 1
            if sock is not None:
                if not readable(sock):
                    return sock
                self._discard(sock)  # closed by the server while idle
                continue
            if opening:
                break
            if time.monotonic() >= until:  # rare (max_connections calls at once): polled, so no hub blocks
                raise NoConnection(f"all {self._size} connections stayed busy (max_connections)")
            time.sleep(max(0.0, min(pause, until - time.monotonic())))
            pause = min(pause * 2, 0.02)
        try:
            sock, server = self._open(until)
        except BaseException:
            with self._lock:
                self._open_count -= 1
            raise
        with self._lock:
            self._all[sock] = server
        return sock

    def _discard(self, sock: socket.socket) -> None:
        with self._lock:
            if sock in self._all:
                del self._all[sock]
                self._open_count -= 1
        with contextlib.suppress(OSError):
            sock.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when their call ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            self._discard(sock)

    def forget(self) -> None:
        """In a forked child: a plain close() of every inherited connection,
        without taking the lock (a parent thread may have held it at the fork)."""
        self._closed = True
        for sock in list(self._all):
            with contextlib.suppress(OSError):
                sock.close()
        self._all, self._idle = {}, []
