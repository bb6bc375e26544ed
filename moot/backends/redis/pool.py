"""The command connections (a pool of plain sockets) and the I/O helpers that work the same under eventlet."""

from __future__ import annotations

import builtins
import contextlib
import importlib
import math
import os
import select
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from moot.backends.redis.resp import _exchange
from moot.realthreads import threading


class _NoConnection(TimeoutError):
    """Every pooled connection stayed busy until the call's deadline."""


_SELECT: Any = select if hasattr(select, "poll") else None  # taken before any monkey-patching


def _real_select() -> Any:
    """The OS's ``select`` module with its ``poll()``, also under
    ``eventlet.monkey_patch()`` (which deletes ``select.poll``; eventlet keeps
    the original module). None where the OS has no poll()."""
    global _SELECT
    if _SELECT is None and "eventlet" in sys.modules:
        with contextlib.suppress(Exception):
            original = importlib.import_module("eventlet.patcher").original("select")
            _SELECT = original if hasattr(original, "poll") else None
    return _SELECT


def _real_os() -> Any:
    """``os`` with the OS's own read() and write(): under
    ``eventlet.monkey_patch()`` they would wait in eventlet's hub instead of
    failing at once on an empty or full non-blocking pipe."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("os"):
        return patcher.original("os")
    return os


def _green() -> bool:
    """True in a process that eventlet monkey-patched (threads are green there)."""
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))


def _pause(until: float, pause: float) -> float:
    """Sleep ``pause`` (never past ``until``); the next, longer pause. A green
    thread yields to eventlet's hub meanwhile (``time.sleep`` is patched there)."""
    time.sleep(max(0.0, min(pause, until - time.monotonic())))
    return min(pause * 2, 0.02)


def _wait_set(event: threading.Event, timeout: float) -> bool:
    """``event.wait(timeout)``, without blocking eventlet's hub when the
    caller is a green thread (the event is a real one, set by a real thread)."""
    if not _green():
        return event.wait(timeout)
    until, pause = time.monotonic() + timeout, 0.0005
    while not event.is_set():
        if time.monotonic() >= until:
            return False
        pause = _pause(until, pause)
    return True


class _Poller:
    """Waits until descriptors are readable, with the OS's poll() (outside
    eventlet's hub, for the listener's real OS thread; no descriptor limit),
    or with a selector where there is no poll()."""

    def __init__(self) -> None:
        real = _real_select()
        self._poll = real.poll() if real is not None else None
        self._in = real.POLLIN if real is not None else 0
        self._selector = selectors.DefaultSelector() if real is None else None

    def register(self, fd: int) -> None:
        if self._poll is not None:
            self._poll.register(fd, self._in)
        else:
            assert self._selector is not None
            self._selector.register(fd, selectors.EVENT_READ)

    def unregister(self, fd: int) -> None:
        if self._poll is not None:
            self._poll.unregister(fd)
        else:
            assert self._selector is not None
            self._selector.unregister(fd)

    def poll(self, timeout: float) -> set[int]:
        """The registered descriptors readable within ``timeout`` seconds."""
        if self._poll is not None:
            return {fd for fd, _ in self._poll.poll(math.ceil(max(timeout, 0.0) * 1000))}
        assert self._selector is not None
        return {key.fd for key, _ in self._selector.select(max(timeout, 0.0))}


def _readable(sock: socket.socket) -> bool:
    """True if an idle connection has something to read: the server closed it
    (or sent what nobody asked for). Never blocks."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
        return True
    real = _real_select()
    if real is not None:  # not select(): descriptors may exceed 1024
        poller = real.poll()
        poller.register(sock.fileno(), real.POLLIN)
        return bool(poller.poll(0))
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(0))


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
            if not _readable(sock):
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

