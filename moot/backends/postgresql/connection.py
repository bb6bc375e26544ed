"""psycopg connections whose every wait is bounded by a deadline, the pool
of them, and how a forked child lets go of inherited ones.

psycopg's own waits have no overall bound (its ``connect_timeout`` is
whole seconds, at least 2). :class:`Conn` drives psycopg's non-blocking
libpq generators itself: each wait polls the socket until the deadline the
caller set in :attr:`Conn.until`, then raises :class:`TimeoutError`; the
connection is then in an unknown state and is closed. A green thread (under
eventlet) waits through eventlet's hub instead of blocking it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Generator
from typing import Any

import psycopg
from psycopg.waiting import Ready, Wait

from moot.backends._support.idle import Idle, may_open_at
from moot.realthreads import green_caller, select, threading

_READY_R, _READY_W = Ready.R, Ready.W


def _ready(fd: int, wait: Wait, until: float) -> Ready:
    """How ``fd`` is ready for what ``wait`` asks, waiting until ``until`` (monotonic)."""
    read, write = bool(wait & Wait.R), bool(wait & Wait.W)
    while True:
        left = until - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer before the deadline")
        if green_caller():
            from eventlet import hubs
            from eventlet.timeout import Timeout

            with contextlib.suppress(Timeout):
                hubs.trampoline(fd, read=read, write=write, timeout=left)
            left = 0.0
        poller = select.poll()
        poller.register(fd, (select.POLLIN if read else 0) | (select.POLLOUT if write else 0))
        events = 0
        for _, event in poller.poll(math.ceil(left * 1000)):
            events |= event
        ready = 0
        if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
            ready |= _READY_R if read else _READY_W
        if events & select.POLLOUT:
            ready |= _READY_W
        if ready:
            return Ready(ready)


def _readable(conn: Conn) -> bool:
    """True if an idle connection has something to read: the server closed
    it (restart, pg_terminate_backend) or sent what nobody asked for."""
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    return bool(poller.poll(0))


class Conn(psycopg.Connection[Any]):
    """A psycopg connection whose waits end at :attr:`until` (monotonic)."""

    until: float = math.inf

    def wait(self, gen: Generator[Wait, Ready, Any], interval: float = 0.0,
             timeout: float | None = None) -> Any:
        fd = self.pgconn.socket
        until = self.until if timeout is None else min(self.until, time.monotonic() + timeout)
        try:
            state = next(gen)
            while True:
                state = gen.send(_ready(fd, state, until))
        except StopIteration as done:
            return done.value


def connect(conninfo: str, until: float) -> Conn:
    """A new autocommit connection, made within ``until`` (TimeoutError if not)."""
    gen = Conn._connect_gen(conninfo)
    try:
        fd, state = next(gen)
        while True:
            fd, state = gen.send(_ready(fd, state, until))
    except StopIteration as done:
        conn: Conn = done.value
    finally:
        gen.close()
    conn.until = until
    try:
        conn.autocommit = True
        conn.prepare_threshold = 0
    except BaseException:
        conn.close()
        raise
    return conn


def forget(conn: Conn) -> None:
    """In a forked child: make the inherited connection's descriptor point at
    /dev/null (the parent's socket is left untouched, nothing is sent on it),
    then close it, which now talks to /dev/null only."""
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    with contextlib.suppress(Exception):
        conn.close()


class NoConnection(TimeoutError):
    """Every pooled connection stayed busy until the call's deadline."""


class Pool:
    """At most ``size`` connections made by ``open_conn(until)``; each used by
    one call at a time and kept for the next unless anything went wrong on it.
    One more is opened only when a call found every connection busy for
    :data:`~moot.backends._support.idle.GRACE` seconds; one idle for
    :data:`~moot.backends._support.idle.SPARE_IDLE` seconds while another
    was idle is closed."""

    def __init__(self, open_conn: Callable[[float], Conn], size: int):
        self._open = open_conn
        self._size = size
        self._lock = threading.Lock()  # real, held for no I/O
        self._idle: Idle[Conn] = Idle()
        self._all: set[Conn] = set()
        self._opening = 0
        self._closed = False

    def opened(self) -> int:
        """The connections open now (in use or idle)."""
        with self._lock:
            return len(self._all)

    def checkout(self, until: float) -> Conn:
        pause = 0.0005
        grace: float | None = None
        while True:
            stale = None
            with self._lock:
                if self._closed:
                    raise ConnectionAbortedError("the backend is closed")
                if self._idle:
                    conn = self._idle.take()
                    if not conn.closed and not _readable(conn):
                        return conn
                    self._all.discard(conn)
                    stale = conn  # closed by the server (or it sent what nobody asked for)
            if stale is not None:
                stale.close()
                continue
            now = time.monotonic()
            with self._lock:
                busy = len(self._all) + self._opening
                if busy < self._size:
                    if grace is None:
                        grace = may_open_at(busy, now, until)
                    if now >= grace:
                        self._opening += 1
                        break
            if now >= until:  # rare (max_connections calls at once): polled, no hub blocks
                raise NoConnection(f"all {self._size} connections stayed busy (max_connections)")
            wake = until if grace is None or grace <= now else min(grace, until)
            time.sleep(max(0.0, min(pause, wake - now)))
            pause = min(pause * 2, 0.02)
        try:
            conn = self._open(until)
        finally:
            with self._lock:
                self._opening -= 1
        with self._lock:
            if not self._closed:
                self._all.add(conn)
                return conn
        conn.close()
        raise ConnectionAbortedError("the backend is closed")

    def checkin(self, conn: Conn) -> None:
        """Give back a connection that is idle and in a known state."""
        spare = None
        with self._lock:
            keep = not self._closed and conn in self._all and not conn.closed \
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            if keep:
                spare = self._idle.put(conn, time.monotonic())
                if spare is not None:
                    self._all.discard(spare)
            else:
                self._all.discard(conn)
        if not keep:
            conn.close()
        if spare is not None:
            with contextlib.suppress(Exception):
                spare.close()

    def discard(self, conn: Conn) -> None:
        with self._lock:
            self._all.discard(conn)
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when their call ends."""
        with self._lock:
            self._closed = True
            idle = self._idle.clear()
            for conn in idle:
                self._all.discard(conn)
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    def forget(self) -> None:
        """In a forked child: :func:`forget` every inherited connection,
        without the lock (a parent thread may have held it at the fork)."""
        self._closed = True
        for conn in list(self._all):
            forget(conn)
        self._all, self._idle = set(), Idle()
