"""The pieces of a backend's I/O thread, written once: a poller over real
descriptors, a wake-up pipe that other threads poke, a heap of timers, and
the check that an idle pooled socket was closed by the server.

They work from a real OS thread also in a process that eventlet has
monkey-patched: the poller uses the OS's ``poll()`` (from
:mod:`moot.realthreads`; no 1,024-descriptor limit like ``select()``, and
no kernel set shared with a forked child like epoll) and the wake-up pipe
the OS's own ``read``/``write``, so neither waits in eventlet's hub. None
of them takes a lock: the thread that owns them, or its caller's lock,
serializes their use."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import selectors
import socket
import ssl
from typing import Generic, TypeVar

from moot.realthreads import real_os, select

T = TypeVar("T")


class Poller(Generic[T]):
    """Waits until registered descriptors are readable (or closed), and says
    which by the data each was registered with. The OS's poll() where there
    is one, else a selector."""

    def __init__(self) -> None:
        has_poll = hasattr(select, "poll")
        self._poll = select.poll() if has_poll else None
        self._selector = None if has_poll else selectors.DefaultSelector()
        self._data: dict[int, T] = {}  # fd -> its data
        self._fds: dict[T, int] = {}  # data -> its fd (the socket may be closed when it is unregistered)

    def register(self, fd: int, data: T) -> None:
        if self._poll is not None:
            self._poll.register(fd, select.POLLIN)
        else:
            assert self._selector is not None
            self._selector.register(fd, selectors.EVENT_READ)
        self._data[fd] = data
        self._fds[data] = fd

    def unregister(self, data: T) -> None:
        """Stop watching what was registered with ``data`` (if anything was)."""
        fd = self._fds.pop(data, None)
        if fd is None:
            return
        del self._data[fd]
        if self._poll is not None:
            self._poll.unregister(fd)
        else:
            assert self._selector is not None
            self._selector.unregister(fd)

    def registered(self) -> list[T]:
        return list(self._data.values())

    def poll(self, timeout: float | None) -> list[T]:
        """The data of the descriptors readable within ``timeout`` seconds
        (None: until one is)."""
        if self._poll is not None:
            ready = self._poll.poll(None if timeout is None else math.ceil(max(timeout, 0.0) * 1000))
            return [self._data[fd] for fd, _ in ready if fd in self._data]
        assert self._selector is not None
        keys = self._selector.select(None if timeout is None else max(timeout, 0.0))
        return [self._data[key.fd] for key, _ in keys if key.fd in self._data]


class Waker:
    """A non-blocking pipe: any thread calls :meth:`wake`, the I/O thread
    polls :attr:`fd` and calls :meth:`drain` when it is readable."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write, False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # closed, or full: the I/O thread wakes anyway
            real_os.write(self._write, b"x")

    def drain(self) -> None:
        with contextlib.suppress(OSError):  # empty (non-blocking), or closed
            real_os.read(self.fd, 65536)

    def close(self) -> None:
        """Close both ends (a plain close(): also right in a forked child).
        Later wake() and drain() calls do nothing, even once the OS has
        reused the descriptors' numbers."""
        fds, self.fd, self._write = (self.fd, self._write), -1, -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class Timers(Generic[T]):
    """A heap of (monotonic time, item); items due at the same time come out
    in the order they were pushed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()

    def push(self, when: float, item: T) -> None:
        heapq.heappush(self._heap, (when, next(self._order), item))

    def first(self) -> float | None:
        """When the earliest item is due, None if there is none."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[float, T]]:
        """Remove and return the items due at ``now``, earliest first."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            when, _, item = heapq.heappop(self._heap)
            due.append((when, item))
        return due

    def clear(self) -> None:
        self._heap.clear()


def readable(sock: socket.socket) -> bool:
    """True if an idle connection has something to read: the server closed it
    (or sent what nobody asked for). Never blocks."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
        return True
    if hasattr(select, "poll"):  # the OS's poll() alone: this runs before every pooled call
        once = select.poll()
        once.register(sock.fileno(), select.POLLIN)
        return bool(once.poll(0))
    poller: Poller[None] = Poller()
    poller.register(sock.fileno(), None)
    return bool(poller.poll(0))
