"""Connections to the server (or to the first live node of several): opened
within the caller's deadline, pooled, and one batch per call.

Guarantees: every call returns or raises within its ``until`` (a
``time.monotonic()`` instant), however the server misbehaves: connecting,
the handshake, sending and each read are bounded by what is left of it. A
batch that failed with a deadlock or a Galera certification failure was
rolled back by the server, and is sent again (after a short random pause)
until it commits or ``until`` passes; any other failure leaves the
connection's state unknown, so it is closed, never reused. A connection
that fails to open moves the pool on to the next host of the URL.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from typing import Any

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import CLIENT  # type: ignore[import-untyped]

from moot.backends._support.idle import Idle, may_open_at
from moot.backends._support.loop import readable
from moot.backends._support.tls import handshake_failure
from moot.backends.mysql import sql
from moot.realthreads import green, original, threading

#: Errors after which the server rolled the transaction back and the batch may be sent again:
#: deadlock (also how Galera reports a certification failure), lock wait timeout, and a
#: Galera node not ready for queries (1047: the batch never ran).
RETRY = frozenset({1213, 1205, 1047})
#: Client-side codes: the connection failed or the server went away mid-call.
GONE = frozenset({2003, 2006, 2013, 2055})
#: Access denied (to the database: 1044; wrong credentials or auth plugin: the others): retrying cannot help.
DENIED = frozenset({1044, 1045, 1251, 1698})


#: Connections inherited across fork() and forgotten: kept so that they are never finalized.
_ORPHANS: list[_Conn] = []


class Refused(Exception):
    """The server refused the credentials or the database (never retried):
    ``args`` are the server's error code and message."""


class Unanswered(Exception):
    """No answer within the deadline, or the connection broke: the outcome of a write is unknown."""


class _Conn:
    """One open connection and what is known about it."""

    def __init__(self, raw: Any, host: int, galera: bool):
        self.raw = raw
        self.host = host
        self.galera = galera


def _left(until: float) -> float:
    left = until - time.monotonic()
    if left <= 0:
        raise Unanswered("the deadline passed")
    return left


class Pool:
    """Up to ``size`` connections to the first host (of ``hosts``) that answers.

    ``open_kwargs`` are PyMySQL's connection arguments except host, port and
    the timeouts. ``real_sockets`` makes connections on the OS's own sockets
    (for a real thread under eventlet)."""

    def __init__(self, hosts: list[tuple[str, int]], open_kwargs: dict[str, Any], size: int,
                 real_sockets: bool = False):
        self._hosts = hosts
        self._kwargs = open_kwargs
        self._size = size
        self._real = real_sockets
        self._lock = threading.Lock()  # real, held for no I/O
        self._idle: Idle[_Conn] = Idle()
        self._open: set[_Conn] = set()
        self._opening = 0
        self._current = 0  # the host new connections try first
        self._closed = False
        self.server = "?"  # the version string of the last server connected to
        self.galera = False  # whether that server is a Galera node

    @property
    def current(self) -> int:
        """The index of the host that new connections try first."""
        return self._current

    # -- opening -----------------------------------------------------------
    def _dial(self, index: int, until: float) -> _Conn:
        host, port = self._hosts[index]
        left = _left(until)
        raw = pymysql.connections.Connection(
            host=host, port=port, connect_timeout=left, read_timeout=left, write_timeout=left,
            autocommit=True, defer_connect=True, client_flag=CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS,
            binary_prefix=True, **self._kwargs)
        sock = None
        if self._real and green():
            sock = original("socket", "socket").create_connection((host, port), left)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            raw.connect(sock)
            self._set_timeouts(raw, until)
            *_, wsrep, version = _execute(raw, f"{sql.SETUP}; SHOW VARIABLES LIKE 'wsrep_on'; SELECT VERSION()", ())
            self.server = str(version[0][0])
            galera = self.galera = bool(wsrep) and str(wsrep[0][1]).upper() == "ON"
            if galera:
                _execute(raw, sql.GALERA_SETUP, ())
        except BaseException:
            with contextlib.suppress(Exception):
                raw._force_close()
            raise
        return _Conn(raw, index, galera)

    def _connect(self, until: float) -> _Conn:
        """A new connection: the current host, else each next one in turn."""
        first = self._current
        error: BaseException | None = None
        for step in range(len(self._hosts)):
            index = (first + step) % len(self._hosts)
            try:
                conn = self._dial(index, until)
            except (pymysql.err.OperationalError, OSError) as exc:
                if isinstance(exc, pymysql.err.OperationalError) and exc.args and exc.args[0] in DENIED:
                    raise Refused(exc.args[0], str(exc.args[1] if len(exc.args) > 1 else exc)) from None
                failure = handshake_failure(exc, "{}:{}".format(*self._hosts[index]))
                if failure is not None:  # an untrusted or misnamed certificate, or no TLS on the server
                    raise failure from None
                error = exc
            else:
                self._current = index
                return conn
            if time.monotonic() >= until:
                break
        raise Unanswered(_reason(error))

    @staticmethod
    def _set_timeouts(raw: Any, until: float) -> None:
        left = _left(until)
        raw._read_timeout = raw._write_timeout = left  # PyMySQL applies them at its next read/write

    # -- the pool ----------------------------------------------------------
    def _checkout(self, until: float) -> _Conn:
        pause = 0.0005
        grace: float | None = None
        while True:
            with self._lock:
                if self._closed:
                    raise Unanswered("the backend is closed")
                while self._idle:
                    conn = self._idle.take()
                    if conn.raw._sock is not None and not readable(conn.raw._sock):
                        return conn
                    self._open.discard(conn)  # the server closed it while idle
                    with contextlib.suppress(Exception):
                        conn.raw._force_close()
                busy = len(self._open) + self._opening
                if busy < self._size:
                    now = time.monotonic()
                    if grace is None:
                        grace = may_open_at(busy, now, until)
                    if now >= grace:
                        self._opening += 1
                        break
            _left(until)
            wake = until if grace is None or grace <= time.monotonic() else min(grace, until)
            time.sleep(min(pause, max(0.0, wake - time.monotonic())))  # green-friendly
            pause = min(pause * 2, 0.02)
        try:
            conn = self._connect(until)
        finally:
            with self._lock:
                self._opening -= 1
        with self._lock:
            self._open.add(conn)
        return conn

    def _checkin(self, conn: _Conn) -> None:
        with self._lock:
            if not self._closed and conn in self._open:
                spare = self._idle.put(conn, time.monotonic())
                if spare is None:
                    return
                self._open.discard(spare)
            else:
                spare = None
        if spare is not None:
            try:
                spare.raw.close()  # COM_QUIT: the server logs no aborted connection
            except Exception:
                with contextlib.suppress(Exception):
                    spare.raw._force_close()
            return
        with contextlib.suppress(Exception):
            conn.raw._force_close()

    def _discard(self, conn: _Conn) -> None:
        with self._lock:
            self._open.discard(conn)
            if conn.host == self._current and len(self._hosts) > 1:
                self._current = (conn.host + 1) % len(self._hosts)  # try another node first next time
        with contextlib.suppress(Exception):
            conn.raw._force_close()

    def run(self, statement: str, args: Any, until: float) -> list[Result]:
        """The result of every statement of ``statement`` (one batch, one round
        trip; ``args`` a sequence for ``%s``, a mapping for ``%(name)s``), sent
        again after a rollback-and-retry error until ``until``."""
        pause = 0.001
        while True:
            conn = self._checkout(until)
            try:
                self._set_timeouts(conn.raw, until)
                results = _execute(conn.raw, statement, args)
            except pymysql.err.MySQLError as exc:
                code = exc.args[0] if exc.args else None
                if code in RETRY:
                    self._discard(conn) if code == 1047 else self._rollback(conn)
                    if time.monotonic() + pause >= until:
                        raise Unanswered(f"{_reason(exc)} (retried until the deadline)") from None
                    time.sleep(random.uniform(pause / 2, pause))
                    pause = min(pause * 2, 0.05)
                    continue
                self._discard(conn)
                if code in GONE or not isinstance(code, int) or code >= 2000:
                    raise Unanswered(_reason(exc)) from None
                raise
            except BaseException:
                self._discard(conn)
                raise
            self._checkin(conn)
            return results

    def _rollback(self, conn: _Conn) -> None:
        """Keep ``conn`` after a rolled-back batch: ROLLBACK is sent with its next use."""
        try:
            _execute(conn.raw, "ROLLBACK", ())
        except Exception:
            self._discard(conn)
        else:
            self._checkin(conn)

    def close(self) -> None:
        """Close the idle connections; those in use close when their call ends."""
        with self._lock:
            self._closed = True
            idle = self._idle.clear()
            for conn in idle:
                self._open.discard(conn)
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.raw.close()  # COM_QUIT, bounded by the connection's last timeouts

    def interrupt(self) -> None:
        """Close the pool and cut off the calls in progress at once (their
        sockets are shut down: they raise Unanswered)."""
        self.close()
        with self._lock:
            busy = list(self._open)
        for conn in busy:
            sock = conn.raw._sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def forget(self) -> None:
        """In a forked child: close every inherited descriptor, no COM_QUIT,
        without taking a lock. Only the descriptor is closed: the connection's
        buffered reader may have been locked by a parent thread reading at the
        fork, so it is not closed nor finalized while the process runs (the
        object is kept). The raw stream under it is marked closed (that takes
        no lock), so that the reader's finalization at interpreter exit finds
        nothing left to close: closing the stream then would fail on the
        already torn-down ``io`` module and print "Exception ignored"."""
        self._closed = True
        for conn in list(self._open):
            sock = conn.raw._sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    os.close(sock.detach())
            reader = getattr(conn.raw, "_rfile", None)
            if reader is not None:
                with contextlib.suppress(Exception):
                    reader.raw.close()
            _ORPHANS.append(conn)
        self._open, self._idle = set(), Idle()


class Result(list[tuple[Any, ...]]):
    """The rows of one statement's result (none for a statement without rows),
    with what the server said of it in its OK packet: ``affected`` (rows
    changed; rows matched for an UPDATE, as connections ask for found rows)
    and ``insert_id`` (``LAST_INSERT_ID()`` after the statement, 0 if unset)."""

    affected = 0
    insert_id = 0


def _execute(raw: Any, statement: str, args: Any) -> list[Result]:
    """One :class:`Result` per statement of ``statement``. On an error the
    cursor is left as it is: closing it would read on, for results that will
    never come."""
    results: list[Result] = []
    cursor = raw.cursor()
    cursor.execute(statement, args or None)
    while True:
        result = Result(cursor.fetchall() if cursor.description is not None else ())
        if cursor.description is None:
            result.affected = max(0, cursor.rowcount)
            result.insert_id = cursor.lastrowid or 0
        results.append(result)
        if not cursor.nextset():
            break
    cursor.close()
    return results


def _reason(error: BaseException | None) -> str:
    """A short cause for a message (PyMySQL's text; never holds a password)."""
    if error is None:
        return "no host to connect to"
    if isinstance(error, pymysql.err.MySQLError) and len(error.args) > 1:
        return f"{error.args[1]} ({error.args[0]})"
    return f"{type(error).__name__}: {error}"
