"""The LISTEN connection and the one real thread that owns it: watches,
re-checks at owner expiry, the own-session check.

Every write NOTIFYs the schema's channel in its own transaction (see
:mod:`moot.backends.postgresql.schema` for the payloads), so a watch
registered while the connection is listening sees every later commit.
Watches are filtered here, by key. The connection is open only while
something is watched (and for :data:`LINGER` seconds after the last watch
went, so that a run of short lock waits reuses it): a backend that watches
nothing holds no connection here. A watch made while no connection listens
(none was needed yet, or it was lost) fires once the thread listens again:
changes may have been made meanwhile.

A watched entry whose owner session expires without anyone deleting it
raises no notice by itself: the thread keeps a timer at the earliest such
expiry (learnt from the payloads and from a re-check made when a key or
prefix is first watched) and then runs a re-check, which reaps the expired
sessions there (their deletion NOTIFYs) and gives the next expiry.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import psycopg

from moot.backends._support.loop import Poller, Waker
from moot.backends._support.rechecks import MARGIN, Rechecks
from moot.backends.base import CallbackWatch, Dispatcher
from moot.backends.postgresql.connection import Conn, forget
from moot.errors import CoordinatorClosed
from moot.realthreads import threading

log = logging.getLogger("moot.backends.postgresql")

_PING_INTERVAL = 5.0  # seconds of silence on the LISTEN connection before it is probed
#: Seconds after a key or prefix is first watched before its first re-check:
#: most waits end sooner (their watch is cancelled, so no query is made at
#: all), and a re-check never delays a notice in that time.
_FIRST_CHECK = 0.02
#: Seconds the connection stays open after the last watch went.
LINGER = 10.0
_WAKE, _SOCK = "wake", "sock"


def directory(key: str) -> str:
    """The prefix a key is directly under ('' for a top-level key)."""
    return key[:key.rfind("/") + 1]


class _Target:
    """A watched key, or a watched prefix (ending in ``/``)."""

    def __init__(self, key: str):
        self.key = key
        self.watches: set[CallbackWatch] = set()
        self.check_at: float | None = None


class Listener:
    """One LISTEN connection and the one real thread that owns it.

    ``open_conn()`` makes a listening connection; ``recheck(key)`` re-checks
    a target (ms until its first foreign owner expires, -1 if none);
    ``session_left(id)`` is the ms the session has left (None if gone);
    ``session_gone(id)`` is told when the own session ended."""

    def __init__(self, open_conn: Callable[[], Conn], recheck: Callable[[str], int],
                 session_left: Callable[[str], float | None], session_gone: Callable[[str], None],
                 dispatcher: Dispatcher, timeout: float):
        self._open = open_conn
        self._dispatcher = dispatcher
        self._timeout = timeout
        self._lock = threading.Lock()
        self._targets: dict[str, _Target] = {}
        self._rechecks: Rechecks[_Target] = Rechecks(
            self._lock, lambda target: recheck(target.key), lambda target: self._targets.get(target.key) is target,
            session_left, session_gone, log, "postgresql")
        self._conn: Conn | None = None
        self._waker = Waker()
        self._poller: Poller[str] = Poller()
        self._poller.register(self._waker.fd, _WAKE)
        self._closed = False
        self._last_rx = 0.0
        self._unwatched_since = time.monotonic()  # when the last target went (lock held)
        self._lost = False  # the connection was lost (not closed for want of watches)
        self._thread = threading.Thread(target=self._run, name="moot-postgresql-listener", daemon=True)

    def start(self) -> None:
        """Start the thread; it connects once something is watched."""
        self._thread.start()

    def _use(self, conn: Conn) -> None:
        conn.add_notify_handler(lambda notice: self._on_notice(notice.payload))
        self._conn = conn
        self._poller.register(conn.pgconn.socket, _SOCK)
        self._last_rx = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._waker.wake()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(self._timeout)
        if self._conn is not None and not self._thread.is_alive():
            self._conn.close()
        self._waker.close()

    def forget(self) -> None:
        """In a forked child: let go of the inherited connection without any
        I/O on it (:func:`~moot.backends.postgresql.connection.forget`)."""
        self._closed = True
        if self._conn is not None:
            forget(self._conn)
        self._conn = None
        self._waker.close()

    # -- called from any thread --------------------------------------------
    def watch(self, key: str, callback: Callable[[], None]) -> CallbackWatch:
        """Call ``callback`` after every change of ``key`` (or directly under
        it, for a prefix). No I/O: if no connection listens yet, the thread
        makes one and then fires the watch."""

        def cancel(watch: CallbackWatch) -> None:
            with self._lock:
                target.watches.discard(watch)
                if not target.watches and self._targets.get(key) is target:
                    del self._targets[key]
                    if not self._targets:
                        self._unwatched_since = time.monotonic()

        watch = CallbackWatch(callback, cancel)
        with self._lock:
            if self._closed:
                raise CoordinatorClosed("this postgresql backend is closed")
            found = self._targets.get(key)
            target = found if found is not None else _Target(key)
            if found is None:
                self._targets[key] = target
                self._rechecks.at(target, time.monotonic() + _FIRST_CHECK)  # learn when its owners expire
            target.watches.add(watch)
        self._waker.wake()
        return watch

    def watch_session(self, session_id: str | None, deadline: float | None) -> None:
        """Check at ``deadline`` (monotonic) that the own session still exists."""
        self._rechecks.watch_session(session_id, deadline)
        self._waker.wake()

    # -- the listener thread ---------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            if self._conn is None:
                with self._lock:
                    wanted = bool(self._targets)
                if not wanted:
                    self._sleep(self._idle_wait(time.monotonic()))
                    self._rechecks.run()
                    continue
                try:
                    conn = self._open()
                except Exception as exc:  # unreachable, refused, TLS: retry with backoff
                    log.debug("postgresql LISTEN connect failed: %s", type(exc).__name__)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    self._rechecks.run()
                    continue
                self._use(conn)
                backoff = 0.05
                # changes may have been made before it listened; after a loss, owners may have changed too
                self._fire_all(recheck=self._lost)
                self._lost = False
            try:
                self._receive()
                self._keepalive()
            except (psycopg.Error, OSError) as exc:
                log.info("postgresql LISTEN connection lost (%s); reconnecting", type(exc).__name__)
                self._drop()
                self._lost = True
            except Exception:  # a bug must not end the thread every watch relies on
                log.exception("postgresql listener failed; reconnecting")
                self._drop()
                self._lost = True
            else:
                self._linger()
            self._rechecks.run()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _sleep(self, seconds: float | None) -> None:
        if _WAKE in self._poller.poll(seconds):
            self._waker.drain()

    def _idle_wait(self, now: float) -> float | None:
        """Seconds until the own-session check (None: none), while not listening."""
        with self._lock:
            first = self._rechecks.next_due()
        return None if first is None else max(0.0, first - now)

    def _next_wait(self, now: float) -> float:
        times = [self._last_rx + _PING_INTERVAL]
        with self._lock:
            first = self._rechecks.next_due()
            if not self._targets:
                times.append(self._unwatched_since + LINGER)
        if first is not None:
            times.append(first)
        return max(0.0, min(times) - now)

    def _linger(self) -> None:
        """Close the connection once nothing was watched for LINGER seconds."""
        with self._lock:
            idle = not self._targets and time.monotonic() - self._unwatched_since >= LINGER
        if idle:
            self._drop()

    def _receive(self) -> None:
        conn = self._conn
        assert conn is not None
        ready = self._poller.poll(self._next_wait(time.monotonic()))
        if _WAKE in ready:
            self._waker.drain()
        if _SOCK not in ready:
            return
        pgconn = conn.pgconn
        pgconn.consume_input()
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError("the LISTEN connection was closed by the server")
        self._last_rx = time.monotonic()
        while (notice := pgconn.notifies()) is not None:
            self._on_notice(notice.extra.decode(errors="replace"))

    def _keepalive(self) -> None:
        if time.monotonic() - self._last_rx < _PING_INTERVAL:
            return
        conn = self._conn
        assert conn is not None
        conn.until = time.monotonic() + self._timeout
        conn.execute(b"SELECT 1")  # notices that come meanwhile reach _on_notice through psycopg
        self._last_rx = time.monotonic()

    def _on_notice(self, payload: str) -> None:
        if payload == "*":
            self._fire_all()
            return
        if payload.startswith("!"):
            # Any role that may connect to the database may NOTIFY this channel:
            # the server is asked whether the session really ended.
            self._rechecks.check_session_now(payload[1:])
            return
        ms, _, rest = payload.partition(":")
        owner, _, key = rest.partition(":")
        with self._lock:
            targets = [t for t in (self._targets.get(key), self._targets.get(directory(key))) if t is not None]
            watches = [w for t in targets for w in t.watches]
            if ms and owner != self._rechecks.own():
                at = time.monotonic() + max(int(ms), 0) / 1000 + MARGIN
                for target in targets:
                    self._rechecks.sooner(target, at)
        self._fire(watches)

    def _fire(self, watches: list[CallbackWatch]) -> None:
        for watch in watches:
            self._dispatcher.fire(watch)

    def _fire_all(self, recheck: bool = True) -> None:
        with self._lock:
            watches = [w for t in self._targets.values() for w in t.watches]
            if recheck:
                now = time.monotonic()
                for target in self._targets.values():
                    self._rechecks.at(target, now)  # its owners may have changed meanwhile too
        self._fire(watches)

    def _drop(self) -> None:
        """Close the connection (broken, or no longer needed); every watch
        fires once it listens again."""
        if self._conn is not None:
            self._poller.unregister(_SOCK)
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
