"""The command connections (a pool of plain sockets) and the I/O helpers that work the same under eventlet."""

from __future__ import annotations

import builtins
import contextlib
import socket
import time
from collections.abc import Callable

from moot.backends._support.loop import readable
from moot.backends.redis.resp import _exchange
from moot.realthreads import threading, wait_until


class _NoConnection(TimeoutError):
    """Every pooled connection stayed busy until the call's deadline."""


def _pause(until: float, pause: float) -> float:
    """Sleep ``pause`` (never past ``until``); the next, longer pause. A green
    thread yields to eventlet's hub meanwhile (``time.sleep`` is patched there)."""
    time.sleep(max(0.0, min(pause, until - time.monotonic())))
    return min(pause * 2, 0.02)


def _wait_set(event: threading.Event, timeout: float) -> bool:
    """``event.wait(timeout)``, without blocking eventlet's hub when the
    caller is a green thread (the event is a real one, set by a real thread)."""
    return wait_until(event.is_set, event.wait, timeout)


class _Pool:
    """The command connections: at most ``size`` at once, each a plain socket
    opened (TLS, AUTH, SELECT) by ``open_socket(until)``. A connection is used
    by one call at a time and kept for the next one unless anything went
    wrong on it (a reply is never awaited twice, and a command whose reply
    was lost is never sent again)."""

    def __init__(self, open_socket: Callable[[float], socket.socket], size: int):
        self._open = open_socket
        self._size = size
        self._lock = threading.Lock()  # real (see moot.realthreads), held for no I/O
        self._idle: list[socket.socket] = []
        self._born: dict[socket.socket, int] = {}  # every open connection -> its generation
        self._opening = 0  # slots taken by connections being opened
        self._generation = 0
        self._closed = False

    def run(self, payload: bytes, count: int, until: float) -> list[object]:
        """``count`` replies to ``payload``, all within ``until`` (monotonic)."""
        sock = self._checkout(until)
        try:
            replies = _exchange(sock, payload, count, until)
        except BaseException:
            self._discard(sock)
            raise
        with self._lock:
            keep = not self._closed and self._born.get(sock) == self._generation
            if keep:
                self._idle.append(sock)
        if not keep:
            self._discard(sock)
        return replies

    def _checkout(self, until: float) -> socket.socket:
        pause = 0.0005
        while True:
            with self._lock:
                if self._closed:
                    raise ConnectionAbortedError("the backend is closed")
                full = not self._idle and len(self._born) + self._opening >= self._size
                if not full and self._idle:
                    sock = self._idle.pop()
                elif not full:
                    self._opening += 1
                    generation = self._generation
                    break
            if full:  # rare (max_connections calls at once): polled, so that no hub blocks
                if time.monotonic() >= until:
                    raise _NoConnection(f"all {self._size} connections stayed busy (max_connections)")
                pause = _pause(until, pause)
                continue
            if not readable(sock):
                return sock
            self._discard(sock)
        try:
            sock = self._open(until)
        except BaseException:
            with self._lock:
                self._opening -= 1
            raise
        with self._lock:
            self._opening -= 1
            current = generation == self._generation and not self._closed
            if current:
                self._born[sock] = generation
        if current:
            return sock
        with contextlib.suppress(OSError):  # opened to the server that was just left
            sock.close()
        raise ConnectionAbortedError("the connection was dropped by a failover")

    def _discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._born.pop(sock, None)
        with contextlib.suppress(OSError):
            sock.close()

    def disconnect(self) -> None:
        """Leave the server now (a failover): idle connections are closed, and
        those in use are shut down (their calls fail at once) and closed."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
            for sock in idle:
                self._born.pop(sock, None)
            busy = list(self._born)
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()
        for sock in busy:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the idle connections; those in use close when their call ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for sock in idle:
                self._born.pop(sock, None)
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()

    def forget(self) -> None:
        """In a forked child: plain close() of every inherited connection,
        without taking the lock (a parent thread may have held it at the fork)."""
        self._closed = True
        for sock in list(self._born):
            with contextlib.suppress(OSError):
                sock.close()
        self._born, self._idle = {}, []

    def sockets(self) -> builtins.list[socket.socket]:
        """The open connections (for tests and diagnostics)."""
        with self._lock:
            return list(self._born)

