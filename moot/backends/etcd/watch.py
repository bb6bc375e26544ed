"""Watches: the one WebSocket that carries every watch of a backend (or, with
etcd authentication, a POST stream per watch), the one hub thread that reads
them all, and the shared watch of a queue."""

from __future__ import annotations

import functools
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from moot import realthreads
from moot.backends._support.loop import Poller, Timers, Waker
from moot.backends.base import CallbackWatch, Dispatcher, Entry
from moot.backends.etcd.http import _ATTEMPT, _NETWORK_ERRORS, _ChunkedLines, _Http, _Json, _StreamLost
from moot.backends.etcd.shared import _created_revision, _Event, _events, _Fire, _Shared, _Watcher
from moot.errors import (
    ConnectionLost,
    MootError,
)
from moot.realthreads import threading

_RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)


class _Stream:
    """One gateway watch stream: its socket and an incremental decoder of the
    chunked HTTP answer into JSON messages. ``fire`` is called (on the hub
    thread) with the events received; ``cancelled`` tells the
    hub to stop reopening it."""

    def __init__(self, request: _Json, fire: _Fire, cancelled: Callable[[], bool]):
        self.request = request
        self.fire = fire
        self.cancelled = cancelled
        self.sock: socket.socket | None = None
        self.peer: tuple[str, int] | None = None
        self.failures = 0
        self.revision = 0  # etcd's revision at the last confirmation (see _created_revision)
        self._decoder = _ChunkedLines()

    def open(self, http_: _Http) -> list[_Event]:
        """(Re)open the stream and wait until etcd confirms the watch, so that
        every later change is reported; the events that came along
        already (in order). Within the caller's deadline (see ``_Http``); a confirmation
        that does not come within 1 s (2 s, ...) is asked for again on the
        next host. Raises ConnectionLost."""
        return http_.open_watch(functools.partial(self._open, http_), self.close, lambda: self.peer)

    def _open(self, http_: _Http, started: float, end: float, attempt: float) -> list[_Event]:
        self.close()
        self._decoder = _ChunkedLines()
        sock, self.peer = http_.open_stream("watch", {"create_request": self.request}, started, end)
        self.sock = sock
        confirm_by = min(end, time.monotonic() + attempt)
        created = False
        events: list[_Event] = []
        while not created:
            left = confirm_by - time.monotonic()
            if left <= 0:
                raise TimeoutError("no confirmation of the watch")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise _StreamLost("closed before the watch was created")
            for message in self._results(self._decoder.feed(data)):
                if message.get("created"):
                    created, self.revision = True, _created_revision(message)
                events += _events(message)
        sock.setblocking(False)
        return events

    @staticmethod
    def _results(messages: list[object]) -> list[_Json]:
        """The watch answers in ``messages``; raises _StreamLost if the watch is over."""
        results = []
        for message in messages:
            result = message.get("result") if isinstance(message, dict) else None
            if not isinstance(result, dict) or result.get("canceled"):
                error = message.get("error") if isinstance(message, dict) else None
                raise _StreamLost(str(error or result or message))
            results.append(result)
        return results

    def feed(self) -> list[_Event]:
        """Read what the socket has; the events it brought, in order."""
        assert self.sock is not None
        events: list[_Event] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                return events
            if not data:
                raise _StreamLost("the connection closed")
            for message in self._results(self._decoder.feed(data)):
                events += _events(message)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


#: What the hub polls: a POST stream, or the shared WebSocket.
_Pollable = _Stream | _Shared


class _WatchHub:
    """The one thread that reads every watch stream of a backend, hands their
    events to the streams' ``fire``, reopens the streams that break and runs
    timers (``call_at``).

    With ``shared`` (no etcd authentication: the gateway's WebSocket cannot
    carry a token) every watch rides one WebSocket; otherwise each watch has
    its own POST stream."""

    def __init__(self, http_: _Http, shared: bool = True):
        self._http = http_
        self._poller: Poller[_Pollable | None] = Poller()  # None: the wake-up pipe
        self._waker = Waker()
        self._poller.register(self._waker.fd, None)
        self._lock = threading.Lock()
        self._added: list[_Stream] = []
        self._dropped: list[_Stream] = []
        self._retry: dict[_Pollable, float] = {}  # stream -> monotonic time to reopen it
        self._timers: Timers[Callable[[], None]] = Timers()  # under _lock
        self._shared = _Shared(http_) if shared else None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="moot-etcd-watch", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        self._waker.wake()

    def open(self, request: _Json, fire: _Fire, cancelled: Callable[[], bool]) -> _Stream | _Watcher:
        """A watch of ``request``, confirmed by etcd (every later change is
        reported to ``fire``) within the caller's deadline; ``drop`` ends it.
        Raises ConnectionLost (or PermissionDenied)."""
        if self._shared is None:
            stream = _Stream(request, fire, cancelled)
            events = stream.open(self._http)
            self.add(stream)
            if events:
                fire(events)
            return stream
        watcher = _Watcher(request, fire, cancelled)
        self._shared.add(watcher)
        self._wake()
        started, end = self._http.span()
        attempt = _ATTEMPT
        created = watcher.created
        while not realthreads.wait_until(created.is_set, created.wait, max(0.0, min(attempt, end - time.monotonic()))):
            if time.monotonic() >= end:
                watcher.abandoned = True
                self.drop(watcher)
                raise ConnectionLost(f"etcd at {self._http.where()} did not confirm a watch within "
                                     f"{time.monotonic() - started:.1f} s")
            self._shared.suspected = True  # the hub replaces a connection that answers nothing
            self._wake()
            attempt *= 2
        if watcher.error is not None:
            raise watcher.error
        return watcher

    def add(self, stream: _Stream) -> None:
        with self._lock:
            self._added.append(stream)
        self._wake()

    def drop(self, stream: _Stream | _Watcher) -> None:
        if isinstance(stream, _Watcher):
            assert self._shared is not None
            self._shared.cancel(stream)
        else:
            with self._lock:
                self._dropped.append(stream)
        self._wake()

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the hub thread at monotonic time ``when`` (or later)."""
        with self._lock:
            self._timers.push(when, fn)
        self._wake()

    def _next_timeout(self) -> float | None:
        with self._lock:
            first = self._timers.first()
        times = [first] if first is not None else []
        times += self._retry.values()
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _run_timers(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = self._timers.pop_due(now)
        for _, fn in due:
            try:
                fn()
            except Exception:  # a failing timer must not stop every watch
                logging.getLogger("moot.backends.etcd").exception("etcd watch timer failed")

    def _run(self) -> None:
        while not self._closed:
            for ready in self._poller.poll(self._next_timeout()):
                if ready is None:
                    self._waker.drain()
                    continue
                try:
                    changed = ready.feed()
                except (*_NETWORK_ERRORS, _StreamLost):
                    self._lost(ready)
                    continue
                if changed:
                    ready.fire(changed)
            self._apply_changes()
            self._tend_shared()
            self._reopen_due()
            self._run_timers()
        self._apply_changes()
        for stream in self._poller.registered():
            if stream is not None:
                stream.close()
        if self._shared is not None:
            self._shared.forget()
        self._waker.close()

    def _apply_changes(self) -> None:
        with self._lock:
            added, self._added = self._added, []
            dropped, self._dropped = self._dropped, []
        for stream in added:
            if stream.sock is not None:
                self._poller.register(stream.sock.fileno(), stream)
        for stream in dropped:
            self._retry.pop(stream, None)
            self._poller.unregister(stream)
            stream.close()

    def _tend_shared(self) -> None:
        """Send what the openers handed over, open the connection when a
        watch needs it, replace one that does not confirm, retry refusals."""
        shared = self._shared
        if shared is None:
            return
        for watcher in shared.refused:
            self.call_at(time.monotonic() + _RECONNECT_DELAYS[-1], functools.partial(shared.add, watcher))
        shared.refused = []
        if shared.sock is None:
            if shared.needed() and shared not in self._retry:
                self._retry[shared] = time.monotonic()
            return
        suspected, shared.suspected = shared.suspected, False
        if suspected and shared.overdue(time.monotonic()):
            self._http.failed(shared.peer)
            self._lost(shared)
            return
        try:
            shared.flush()
        except (*_NETWORK_ERRORS, _StreamLost):
            self._lost(shared)

    def _lost(self, stream: _Pollable) -> None:
        self._poller.unregister(stream)
        stream.close()
        self._retry[stream] = time.monotonic()

    def _reopen_due(self) -> None:
        now = time.monotonic()
        for stream in [s for s, when in self._retry.items() if when <= now]:
            if stream.cancelled() or self._closed:
                self._retry.pop(stream)
                continue
            try:
                stream.open(self._http)
            except Exception as exc:
                if not isinstance(exc, MootError):  # a bug: say so, and keep the other watches going
                    logging.getLogger("moot.backends.etcd").exception("cannot reopen an etcd watch stream")
                elif isinstance(stream, _Shared):
                    stream.fail_waiting(exc)  # its openers raise at once, as a stream of their own would
                stream.failures += 1
                delay = _RECONNECT_DELAYS[min(stream.failures, len(_RECONNECT_DELAYS)) - 1]
                self._retry[stream] = time.monotonic() + delay
                continue
            stream.failures = 0
            del self._retry[stream]
            assert stream.sock is not None
            self._poller.register(stream.sock.fileno(), stream)
            stream.fire(None)  # changes while it was down

    def close(self) -> None:
        self._closed = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(2.0)

    def forget(self) -> None:
        """In a forked child (where the hub thread does not run): close every
        inherited descriptor with a plain close, taking no lock (a parent's
        thread may have held it)."""
        self._closed = True
        streams = {*self._added, *self._dropped, *(s for s in self._retry if isinstance(s, _Stream))}
        streams.update(s for s in self._poller.registered() if isinstance(s, _Stream))
        self._added, self._dropped, self._retry, self._timers = [], [], {}, Timers()
        for stream in streams:
            stream.close()
        if self._shared is not None:
            self._shared.forget()
        self._waker.close()


#: The last segment of a key made by ``create_sequential``/``enqueue``.
_QUEUE_ENTRY = re.compile(r"[0-9a-f]{32}\Z")
#: Seconds a queue's stream stays open after its last watch is cancelled.
_LINGER = 10.0
#: Deletions a queue's stream remembers (see :meth:`_QueueWatch.cleared`).
_REMEMBERED = 4096


class _EntryWatch(CallbackWatch):
    """A watch on a queue entry, carried by its queue's :class:`_QueueWatch`."""

    def __init__(self, callback: Callable[[], None], on_cancel: Callable[[CallbackWatch], None],
                 queue: _QueueWatch, key_of: Callable[[str], bytes], seen: int = 0):
        super().__init__(callback, on_cancel)
        self._queue = queue
        self._key_of = key_of
        self.seen = seen  # the watched key's revision as its watcher read it: older changes call nothing
        self.deleted_at: int | None = None  # the revision that deleted the watched key, once told

    def cleared_for(self, mine: Entry, ahead: Sequence[Entry]) -> bool:
        """The watched key's deletion was told at a revision where every
        entry of ``ahead`` was gone and ``mine`` still there, as this
        queue's stream tells it (:meth:`_QueueWatch.cleared`)."""
        deleted_at, key_of = self.deleted_at, self._key_of
        return deleted_at is not None and mine.seq is not None and self._queue.cleared(
            [key_of(entry.key) for entry in ahead], key_of(mine.key), mine.seq, deleted_at)


class _QueueWatch:
    """One etcd watch on a queue's directory, shared by every watch on its
    entries. A waiter watches the entry ahead of it afresh at each turn: an
    etcd watch per watch would cost a round trip each time and,
    when a write lands while etcd registers the watch, etcd 3.4 delivers its
    events only at its next 100 ms catch-up. The stream stays open
    ``_LINGER`` seconds after its last watch is cancelled.

    It also remembers the revisions of the last ``_REMEMBERED`` deletions it
    told of, so that a waiter can tell, without a read, whether the entries
    ahead of its own were gone and its own still there when the one it
    watched went (:meth:`cleared`)."""

    def __init__(self, dispatcher: Dispatcher):
        self._dispatcher = dispatcher
        self._lock = threading.Lock()
        self._watches: dict[bytes, set[_EntryWatch]] = {}
        self._keys: dict[CallbackWatch, bytes] = {}
        self._idle_since: float | None = None
        self.closed = False
        self.stream: _Stream | _Watcher | None = None
        self._since: int | None = None  # every change after this revision is told (None: not known)
        self._broken = False  # the stream was created again: changes may have gone untold
        self._deleted: dict[bytes, int] = {}  # key -> revision of its deletion, oldest first
        self._forgotten_through = 0  # the newest revision of a deletion dropped from _deleted

    def opened(self, stream: _Stream | _Watcher) -> None:
        """``stream`` carries this queue's watch from its confirmation on."""
        with self._lock:
            self.stream = stream
            if not self._broken:
                self._since = stream.revision

    def cleared(self, ahead: list[bytes], mine: bytes, created: int, revision: int) -> bool:
        """Whether at ``revision`` every key of ``ahead`` was gone and the
        entry ``mine``, created at revision ``created``, still there. Gone:
        this stream told a deletion at or before ``revision`` (for good:
        entries are never made again under a name, which is random). Still
        there: this stream has told every change since before ``created``
        (confirmed at or before it, never created again, no deletion after
        it forgotten) and no deletion of ``mine`` up to ``revision`` (etcd
        tells a watch's changes in the order of their revisions, all of
        one revision in one answer)."""
        with self._lock:
            if self._broken or self._since is None or self._since > created or self._forgotten_through > created:
                return False
            deleted = self._deleted
            if not all(key in deleted and deleted[key] <= revision for key in ahead):
                return False
            return mine not in deleted or deleted[mine] > revision

    def add(self, key: bytes, watch: _EntryWatch) -> None:
        with self._lock:
            self._watches.setdefault(key, set()).add(watch)
            self._keys[watch] = key
            self._idle_since = None

    def remove(self, watch: CallbackWatch) -> bool:
        """Forget ``watch``; True if no watch is left."""
        with self._lock:
            key = self._keys.pop(watch, None)
            if key is not None:
                watches = self._watches[key]
                watches.discard(watch)  # type: ignore[arg-type]  # the _EntryWatch added with key
                if not watches:
                    del self._watches[key]
            if self._watches:
                return False
            self._idle_since = time.monotonic()
            return True

    def is_closed(self) -> bool:
        return self.closed

    def retire(self, idle_before: float) -> bool:
        """Mark closed if unused since before ``idle_before``; True if so."""
        with self._lock:
            if self._watches or self._idle_since is None or self._idle_since > idle_before:
                return False
            self.closed = True
            return True

    def fire(self, events: list[_Event] | None) -> None:
        """Record what ``events`` deleted, then call the watches of their keys
        (every watch if None: the stream was created again)."""
        targets: list[CallbackWatch] = []
        with self._lock:
            if events is None:
                self._broken = True
                targets += self._keys
            else:
                for key, revision, deleted in events:
                    if deleted:
                        self._remember(key, revision)
                    for entry_watch in self._watches.get(key, ()):
                        if revision > entry_watch.seen:  # not a change its watcher had read already
                            if deleted and entry_watch.deleted_at is None:
                                entry_watch.deleted_at = revision
                            targets.append(entry_watch)
        for watch in targets:
            self._dispatcher.fire(watch)

    def _remember(self, key: bytes, revision: int) -> None:
        deleted = self._deleted
        deleted[key] = revision
        if len(deleted) > _REMEMBERED:
            oldest = next(iter(deleted))
            self._forgotten_through = max(self._forgotten_through, deleted.pop(oldest))
