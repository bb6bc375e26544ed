"""The pub/sub connection and the one thread that owns it: watches, re-checks at owner expiry, the own-session check."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from moot.backends._support.loop import Poller, Waker
from moot.backends._support.lost import spent
from moot.backends._support.rechecks import MARGIN, Rechecks
from moot.backends.base import CallbackWatch, Dispatcher
from moot.backends.redis.pool import _wait_set
from moot.backends.redis.resp import _pack, _Reader, _RespError
from moot.deadline import remaining
from moot.errors import (
    ConnectionLost,
    CoordinatorClosed,
)
from moot.realthreads import threading

log = logging.getLogger("moot.backends.redis")

_PING_INTERVAL = 5.0  # seconds of silence on the pub/sub connection before it is probed
#: Channels nobody watches any more are unsubscribed in batches, at most this
#: late or this many at once: a waiter's watch on the entry ahead of it ends at
#: every handoff, and one UNSUBSCRIBE each would be a third request per handoff
#: (a message on such a channel meanwhile finds no target and is dropped). The
#: delay is the probe interval, and an UNSUBSCRIBE is the probe (its replies
#: show the connection alive, as PING's would): one request per interval at
#: most for both, however many handoffs happen in it. (A delay of 0.5 s still
#: cost one UNSUBSCRIBE per handoff when handoffs came about 0.5 s apart.)
_UNSUBSCRIBE_DELAY = _PING_INTERVAL
_UNSUBSCRIBE_BATCH = 256


_NEW, _PENDING, _LIVE = "new", "pending", "live"
_WAKE, _SOCK = "wake", "sock"  # what the listener's poller watches


class _Target:
    """One subscribed channel: a watched key or prefix, or a session's end notices.

    ``scope`` = (directory hash, directory, leaf or '' for a prefix) is what a
    re-check looks at; None for a channel that needs none."""

    def __init__(self, channel: bytes, scope: tuple[str, str, str] | None):
        self.channel = channel
        self.scope = scope
        self.watches: set[CallbackWatch] = set()
        self.state = _NEW
        self.live = threading.Event()
        self.resync = False  # fire once re-subscribed: notifications may have been missed
        self.check_at: float | None = None


class _Listener:
    """One pub/sub connection and the one thread that owns it.

    Only the listener thread touches the socket (safe with TLS); other threads
    register watches and poke it through a socketpair. It also runs the
    re-checks at owner expiry and the own-session watchdog."""

    def __init__(self, open_socket: Callable[[], socket.socket], recheck: Callable[[tuple[str, str, str]], int],
                 session_left: Callable[[str], float | None], session_gone: Callable[[str], None],
                 dispatcher: Dispatcher, timeout: float):
        self._open = open_socket
        self._recheck = recheck
        self._session_gone = session_gone
        self._dispatcher = dispatcher
        self._timeout = timeout
        self._lock = threading.Lock()
        self._targets: dict[bytes, _Target] = {}
        self._dirty: set[bytes] = set()
        self._unwatched: set[bytes] = set()  # subscribed, unwatched, their UNSUBSCRIBE not sent yet
        self._unsubscribe_at: float | None = None
        self._rechecks: Rechecks[_Target] = Rechecks(
            self._lock, self._recheck_target, lambda target: self._targets.get(target.channel) is target,
            session_left, self._session_ended, log, "redis")
        self._sock: socket.socket | None = None
        self._reader = _Reader()
        self._waker = Waker()
        self._poller: Poller[str] = Poller()
        self._poller.register(self._waker.fd, _WAKE)
        self._closed = False
        self._reconnect = False
        self._last_rx = 0.0
        self._ping_sent: float | None = None
        self._thread = threading.Thread(target=self._run, name="moot-redis-listener", daemon=True)

    def start(self, sock: socket.socket) -> None:
        self._use(sock)
        self._thread.start()

    def _use(self, sock: socket.socket) -> None:
        self._sock, self._reader = sock, _Reader()
        self._poller.register(sock.fileno(), _SOCK)
        self._last_rx, self._ping_sent = time.monotonic(), None

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._poke()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(self._timeout)
        if self._sock is not None:
            self._sock.close()
        self._waker.close()

    def forget(self) -> None:
        """In a forked child: close the inherited descriptors with a plain
        close() and nothing else. No lock is taken (a parent thread may have
        held one at the fork) and no UNSUBSCRIBE is sent."""
        self._closed = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._waker.close()

    # -- called from any thread --------------------------------------------
    def watch(self, channel: bytes, scope: tuple[str, str, str] | None, callback: Callable[[], None],
              wait: bool) -> CallbackWatch:
        """Subscribe ``callback`` to ``channel``; with ``wait``, return only once
        the server confirmed the subscription (ConnectionLost if it does not
        within the caller's deadline, bounded by this listener's timeout)."""
        started = time.monotonic()
        bound = remaining(self._timeout) if wait else 0.0

        def forget(watch: CallbackWatch) -> None:
            with self._lock:
                target.watches.discard(watch)
                self._dirty.add(channel)
            self._poke()

        watch = CallbackWatch(callback, forget)
        with self._lock:
            if self._closed:
                raise CoordinatorClosed("this redis backend is closed")
            found = self._targets.get(channel)
            target = found if found is not None else _Target(channel, scope)
            self._targets[channel] = target
            target.watches.add(watch)
            self._dirty.add(channel)
        self._poke()
        if wait and not _wait_set(target.live, bound):
            watch.cancel()
            raise ConnectionLost(f"redis did not confirm a subscription; gave up {spent(started)}")
        return watch

    def reconnect(self) -> None:
        """Drop the connection and open a new one (e.g. to a new primary)."""
        with self._lock:
            self._reconnect = True
        self._poke()

    def watch_session(self, session_id: str | None, deadline: float | None) -> None:
        """Check at ``deadline`` (monotonic) that the own session still exists."""
        self._rechecks.watch_session(session_id, deadline)
        self._poke()

    def _poke(self) -> None:
        self._waker.wake()

    # -- the listener thread ---------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            if self._sock is None:
                try:
                    sock = self._open()
                except Exception as exc:  # unreachable, TLS or AUTH failure: retry with backoff
                    log.debug("redis pub/sub reconnect failed: %s", type(exc).__name__)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                self._use(sock)
                backoff = 0.05
            try:
                with self._lock:
                    reconnect, self._reconnect = self._reconnect, False
                if reconnect:
                    raise ConnectionAbortedError("asked to reconnect")
                self._flush()
                self._receive()
                self._keepalive()
            except (OSError, _RespError) as exc:
                log.info("redis pub/sub connection lost (%s); reconnecting", type(exc).__name__)
                self._drop()
            except Exception:  # a bug must not end the thread every watch relies on
                log.exception("redis pub/sub listener failed; reconnecting")
                self._drop()
            self._rechecks.run()

    def _sleep(self, seconds: float) -> None:
        if _WAKE in self._poller.poll(seconds):
            self._waker.drain()

    def _send(self, *args: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(_pack(*args))

    def _flush(self, probe: bool = False) -> bool:
        """Send the subscriptions that watch() asked for, and the
        unsubscriptions that cancel() asked for once a batch is due (or at
        once with ``probe``, to serve as the keepalive probe). True if an
        UNSUBSCRIBE was sent: it probes the connection as a PING would."""
        subscribe: list[bytes] = []
        unsubscribe: list[bytes] = []
        now = time.monotonic()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            for channel in dirty:
                target = self._targets.get(channel)
                if target is None:
                    continue
                if target.watches and target.state == _NEW:
                    target.state = _PENDING
                    subscribe.append(channel)
                    self._unwatched.discard(channel)  # subscribed again (confirmed again, harmlessly)
                elif not target.watches and target.state != _PENDING:
                    del self._targets[channel]
                    if target.state == _LIVE:
                        self._unwatched.add(channel)
                        if self._unsubscribe_at is None:
                            self._unsubscribe_at = now + _UNSUBSCRIBE_DELAY
            if self._unwatched and (probe or len(self._unwatched) >= _UNSUBSCRIBE_BATCH
                                    or (self._unsubscribe_at is not None and now >= self._unsubscribe_at)):
                unsubscribe, self._unwatched, self._unsubscribe_at = list(self._unwatched), set(), None
        if subscribe:
            self._send(b"SUBSCRIBE", *subscribe)
        if unsubscribe:
            self._send(b"UNSUBSCRIBE", *unsubscribe)
            if self._ping_sent is None:
                self._ping_sent = now  # its replies must come as a PING's would
        return bool(unsubscribe)

    def _next_wait(self, now: float) -> float:
        times = [self._ping_sent + self._timeout if self._ping_sent is not None
                 else self._last_rx + _PING_INTERVAL]
        with self._lock:
            first = self._rechecks.next_due()
            if self._unsubscribe_at is not None:
                times.append(self._unsubscribe_at)
        if first is not None:
            times.append(first)
        return max(0.0, min(times) - now)

    def _receive(self) -> None:
        sock = self._sock
        assert sock is not None
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        wait = 0.0 if pending else self._next_wait(time.monotonic())
        ready = self._poller.poll(wait)
        if _WAKE in ready:
            self._waker.drain()
        if _SOCK not in ready and not pending:
            return
        data = self._recv(sock)
        if data is None:
            return
        if not data:
            raise ConnectionResetError("the server closed the pub/sub connection")
        self._last_rx, self._ping_sent = time.monotonic(), None
        for reply in self._reader.replies(data):
            self._handle(reply)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes | None:
        """What is readable now; None if a TLS socket had only protocol records
        (e.g. TLS 1.3 session tickets), which would make a blocking recv hang."""
        if not isinstance(sock, ssl.SSLSocket):
            return sock.recv(65536)
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            return sock.recv(65536)
        except ssl.SSLWantReadError:
            return None
        finally:
            sock.settimeout(timeout)

    def _keepalive(self) -> None:
        now = time.monotonic()
        if self._ping_sent is None:
            if now - self._last_rx >= _PING_INTERVAL and not self._flush(probe=True):
                self._send(b"PING")
                self._ping_sent = now
        elif now - self._ping_sent > self._timeout:
            raise TimeoutError("no answer to PING on the pub/sub connection")

    def _handle(self, reply: object) -> None:
        if isinstance(reply, _RespError):
            log.warning("redis pub/sub error: %s", reply)
            return
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind, channel = reply[0], reply[1]
        if not isinstance(channel, bytes):
            return
        if kind == b"message" and len(reply) == 3 and isinstance(reply[2], bytes):
            self._on_message(channel, reply[2])
        elif kind == b"subscribe":
            self._on_subscribed(channel)

    def _fire(self, watches: Sequence[CallbackWatch]) -> None:
        for watch in watches:
            self._dispatcher.fire(watch)

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        with self._lock:
            target = self._targets.get(channel)
            if target is None:
                return
            watches = list(target.watches)
            owner, _, ms = payload.partition(b":")
            own = self._rechecks.own()
            if target.scope is not None and ms and owner != (own.encode() if own else None):
                self._rechecks.sooner(target, time.monotonic() + int(ms) / 1000 + MARGIN)
        self._fire(watches)

    def _on_subscribed(self, channel: bytes) -> None:
        with self._lock:
            target = self._targets.get(channel)
            if target is None or target.state != _PENDING:
                return
            target.state = _LIVE
            target.live.set()
            if target.scope is not None:
                self._rechecks.at(target, time.monotonic())
            if not target.watches:
                self._dirty.add(channel)
            watches = list(target.watches) if target.resync else []
            target.resync = False
        self._fire(watches)

    def _drop(self) -> None:
        """Forget the broken connection; every watch is re-subscribed and fires then."""
        if self._sock is not None:
            self._poller.unregister(_SOCK)
            self._sock.close()
        self._sock = None
        with self._lock:
            self._unwatched, self._unsubscribe_at = set(), None  # the new connection subscribes afresh
            for channel, target in list(self._targets.items()):
                if not target.watches:
                    del self._targets[channel]
                    continue
                target.state = _NEW
                target.live.clear()
                target.resync = True
                self._dirty.add(channel)
            self._rechecks.clear(self._targets.values())

    def _recheck_target(self, target: _Target) -> int:
        assert target.scope is not None  # only targets with a scope are scheduled
        return self._recheck(target.scope)

    def _session_ended(self, session_id: str) -> None:
        """The own session is gone: every watch fires (its holds may be gone)."""
        with self._lock:
            watches = [w for t in self._targets.values() for w in t.watches]
        self._fire(watches)
        self._session_gone(session_id)
