"""The one WebSocket that carries every watch of a backend (no etcd
authentication): :class:`_Shared` and its :class:`_Watcher` s, driven by
the hub thread of :mod:`moot.backends.etcd.watch`."""

from __future__ import annotations

import base64
import functools
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable

from moot.backends.etcd import websocket
from moot.backends.etcd.http import _ATTEMPT, _Http, _Json, _StreamLost
from moot.errors import MootError
from moot.realthreads import select, threading

#: One change a watch told of: the key, the revision of the change, and
#: whether it deleted the key (else it put it).
_Event = tuple[bytes, int, bool]


def _events(message: _Json) -> list[_Event]:
    """The changes of a watch answer, in etcd's order (by revision)."""
    return [(base64.b64decode(kv.get("key", "")), int(kv.get("mod_revision", 0)), event.get("type") == "DELETE")
            for event in message.get("events", ()) for kv in (event.get("kv", {}),)]


def _created_revision(message: _Json) -> int:
    """The revision etcd was at when it confirmed a watch (every change
    after it is reported)."""
    return int(message.get("header", {}).get("revision", 0))


#: What a stream calls with the changes it told of (None: anything may have
#: changed, e.g. while the stream was being reopened).
_Fire = Callable[[list[_Event] | None], None]


class _Watcher:
    """One etcd watch (a key or a range) carried by the backend's shared
    WebSocket. ``fire`` and ``cancelled`` as for :class:`_Stream`.
    ``created`` is set once etcd confirmed it (or refused it: ``error``)."""

    def __init__(self, request: _Json, fire: _Fire, cancelled: Callable[[], bool]):
        self.request = request
        self.fire = fire
        self._cancelled = cancelled
        self.created = threading.Event()
        self.error: MootError | None = None
        self.confirmed = False  # etcd confirmed it once: later creations are re-creations
        self.revision = 0  # etcd's revision at the last confirmation (see _created_revision)
        self.abandoned = False  # its opener gave up waiting

    def cancelled(self) -> bool:
        return self.abandoned or self._cancelled()


class _Shared:
    """The one WebSocket to the gateway's ``/v3/watch`` that carries every
    :class:`_Watcher` of a backend, so that the connections and descriptors
    of a process do not grow with the number of keys it watches.

    Only the hub thread touches the socket. Openers hand watchers over with
    :meth:`add` (any thread); the hub sends their create requests, and etcd
    answers creations in the order they were asked for. When the connection
    breaks, the hub reopens it and creates every live watcher again, firing
    each once it is back (changes while it was down are not replayed)."""

    def __init__(self, http_: _Http):
        self._http = http_
        self.sock: socket.socket | None = None
        self.peer: tuple[str, int] | None = None
        self.failures = 0
        self._frames = websocket.Frames(websocket.new_key())
        self._lock = threading.Lock()
        self._unsent: list[_Watcher] = []  # under _lock: to be created
        self._to_cancel: list[_Watcher] = []  # under _lock
        self._pending: deque[tuple[_Watcher, float]] = deque()  # create sent, unanswered: (watcher, when sent)
        self._watching: dict[int, _Watcher] = {}  # etcd's watch_id -> watcher
        self._out = bytearray()  # frames not sent yet
        self.suspected = False
        self.refused: list[_Watcher] = []  # (hub thread) refused on re-creation: to try again later

    def add(self, watcher: _Watcher) -> None:
        with self._lock:
            self._unsent.append(watcher)

    def cancel(self, watcher: _Watcher) -> None:
        with self._lock:
            self._to_cancel.append(watcher)

    def cancelled(self) -> bool:
        """True if nothing needs the connection (the hub does not reopen it)."""
        with self._lock:
            return not (self._unsent or self._pending or self._watching)

    def needed(self) -> bool:
        with self._lock:
            return bool(self._unsent)

    def overdue(self, now: float) -> bool:
        """A creation has waited for its answer longer than an attempt's time."""
        return bool(self._pending) and now - self._pending[0][1] > _ATTEMPT

    def open(self, http_: _Http) -> list[_Event]:
        """(Re)connect and create every live watcher, waiting for etcd to
        confirm them all (within the per-call bound; a connection that
        answers nothing within 1 s, 2 s, ... is replaced by one to the next
        host). Raises ConnectionLost."""
        return http_.open_watch(functools.partial(self._open, http_), self.close, lambda: self.peer)

    def _open(self, http_: _Http, started: float, end: float, attempt: float) -> list[_Event]:
        self.close()
        key = websocket.new_key()
        self._frames = websocket.Frames(key)
        self._out = bytearray()
        self.sock, self.peer = http_.open_stream("watch", None, started, end, websocket_key=key)
        self.sock.setblocking(False)
        confirm_by = min(end, time.monotonic() + attempt)
        upgrading = True  # the server takes no frame before its answer to the upgrade
        while upgrading or self._pending:
            left = confirm_by - time.monotonic()
            if left <= 0 or not self._ready(left)[0]:
                raise TimeoutError("no confirmation of the watches")
            self._read()
            if upgrading and self._frames.upgraded:
                upgrading = False
                self.flush()
            self._write()
        return []  # events that came along went to their watchers

    def flush(self) -> None:
        """Send the create and cancel requests handed over (hub thread, connected)."""
        with self._lock:
            unsent, self._unsent = self._unsent, []
            to_cancel, self._to_cancel = self._to_cancel, []
        cancelled = {id(watcher) for watcher in to_cancel}
        for watch_id, watcher in list(self._watching.items()):
            if id(watcher) in cancelled or watcher.cancelled():
                del self._watching[watch_id]
                self._out += websocket.message({"cancel_request": {"watch_id": watch_id}})
        now = time.monotonic()
        for watcher in unsent:
            if not watcher.cancelled():
                self._pending.append((watcher, now))
                self._out += websocket.message({"create_request": watcher.request})
        self._write()

    def _ready(self, timeout: float) -> tuple[bool, bool]:
        """Wait up to ``timeout`` until the socket is readable or (with
        something to send) writable: (readable, writable)."""
        assert self.sock is not None
        poll = select.poll()
        poll.register(self.sock.fileno(), select.POLLIN | (select.POLLOUT if self._out else 0))
        events = 0
        for _, mask in poll.poll(max(0.0, timeout) * 1000):
            events |= mask
        return bool(events & ~select.POLLOUT), bool(events & select.POLLOUT)

    def _write(self) -> None:
        """Send what is queued, reading meanwhile whenever etcd writes (it
        stops reading while its answers wait to be read: never block on a
        send alone). Within the per-call bound; raises TimeoutError."""
        assert self.sock is not None
        end = time.monotonic() + self._http.timeout
        while self._out:
            try:
                sent = self.sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                readable, writable = self._ready(end - time.monotonic())
                if not (readable or writable):
                    raise TimeoutError("etcd takes no watch request") from None
                if readable:
                    self._read()
                continue
            del self._out[:sent]

    def feed(self) -> list[_Event]:
        """Read what the socket has and hand the events to their watchers."""
        self._read()
        self._write()  # pongs
        return []

    def _read(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            if not data:
                raise _StreamLost("the connection closed")
            self._received(data)

    def _received(self, data: bytes) -> None:
        for result in self._frames.feed(data):
            watch_id = int(result.get("watch_id", 0))
            if result.get("created"):
                self._answered(watch_id, result)
                continue
            watcher = self._watching.get(watch_id)
            if watcher is None:  # cancelled by us (etcd acknowledges it), or an unknown id
                continue
            if result.get("canceled"):  # etcd ended it: create it again, changes meanwhile unseen
                del self._watching[watch_id]
                self.add(watcher)
                watcher.fire(None)
                continue
            events = _events(result)
            if events:
                watcher.fire(events)
        for reply in self._frames.replies:
            self._out += reply
        self._frames.replies = []

    def _answered(self, watch_id: int, result: _Json) -> None:
        if not self._pending:
            raise _StreamLost("etcd confirmed a watch nobody asked for")
        watcher, _ = self._pending.popleft()
        if result.get("canceled"):  # refused
            reason = str(result.get("cancel_reason") or result)
            if watcher.confirmed:  # refused after a reconnection: fire, and try again later
                watcher.fire(None)
                self.refused.append(watcher)
                return
            watcher.error = self._http.watch_refused(reason)
            watcher.created.set()
            return
        self._watching[watch_id] = watcher
        watcher.revision = _created_revision(result)
        if watcher.cancelled():
            self.cancel(watcher)
        elif watcher.confirmed:
            watcher.fire(None)  # created again: changes while it was down are not replayed
        else:
            watcher.confirmed = True
            watcher.created.set()

    def fire(self, events: list[_Event] | None) -> None:
        """Nothing: each watcher was fired as it was created again."""

    def fail_waiting(self, error: MootError) -> None:
        """The connection cannot be opened: the openers waiting for a first
        creation get ``error``; watchers created before wait for the next attempt."""
        with self._lock:
            fresh = [watcher for watcher in self._unsent if not watcher.confirmed]
            self._unsent = [watcher for watcher in self._unsent if watcher.confirmed]
        for watcher in fresh:
            watcher.error = error
            watcher.created.set()

    def close(self) -> None:
        """Close the socket; every live watcher is to be created again."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._out = bytearray()
        again = [watcher for watcher, _ in self._pending] + list(self._watching.values())
        self._pending.clear()
        self._watching.clear()
        with self._lock:
            self._unsent[:0] = [watcher for watcher in again if not watcher.cancelled()]

    def forget(self) -> None:
        """In a forked child: close the socket, nothing else."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
