"""``memory://[name]``: one process, many threads.

Coordinators in one process that connect to the same ``memory://name`` share
one store; sessions expire on their TTL like on a server, so the memory
backend behaves like the others (and serves as the reference for them).
Nothing survives the process.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections.abc import Callable

from moot.backends.base import Backend, CallbackWatch, Dispatcher, Entry, Watch
from moot.errors import CoordinatorClosed, SessionExpired
from moot.realthreads import threading


@dataclasses.dataclass
class _Session:
    ttl: float
    deadline: float  # time.monotonic()
    last_seen: float  # time.time()
    backend: MemoryBackend


class _Store:
    """The shared state behind one ``memory://name``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Entry] = {}
        self.counters: dict[str, int] = {}
        self.sessions: dict[str, _Session] = {}
        self.watches: dict[str, set[tuple[CallbackWatch, Dispatcher]]] = {}
        self.versions = itertools.count(1)
        self._reaper_wake = threading.Condition(self.lock)
        threading.Thread(target=self._reap, name="moot-memory-reaper", daemon=True).start()

    # All methods named _locked_* expect self.lock to be held.
    def _locked_changed(self, key: str) -> None:
        parent = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        for watched in (key, parent):
            for watch, dispatcher in self.watches.get(watched, ()):
                dispatcher.fire(watch)

    def _locked_end_session(self, session_id: str) -> _Session | None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return None
        for key in [k for k, e in self.data.items() if e.owner == session_id]:
            del self.data[key]
            self._locked_changed(key)
        return session

    def _locked_live_session(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        return session is not None and session.deadline > time.monotonic()

    def end_session(self, session_id: str) -> _Session | None:
        with self.lock:
            return self._locked_end_session(session_id)

    def _reap(self) -> None:
        while True:
            expired: list[_Session] = []
            with self.lock:
                now = time.monotonic()
                for sid, session in list(self.sessions.items()):
                    if session.deadline <= now:
                        self._locked_end_session(sid)
                        expired.append(session)
                deadlines = [s.deadline for s in self.sessions.values()]
                if not expired:
                    self._reaper_wake.wait(min(deadlines) - now if deadlines else None)
            for session in expired:
                session.backend._session_lost()


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _store(name: str) -> _Store:
    with _stores_lock:
        if name not in _stores:
            _stores[name] = _Store()
        return _stores[name]


class MemoryBackend(Backend):
    """Primitives over an in-process store shared by name."""

    reads_deadline = False  # nothing waits on anything but the store's lock

    def connect(self, timeout: float) -> None:
        name = (self.url.hosts[0][0] if self.url.hosts else "") + self.url.path
        self._store = _store(name)
        self._session_id: str | None = None
        self._closed = False
        self._dispatcher = Dispatcher("moot-memory-watch")

    def close(self) -> None:
        if self._closed:
            return
        self.close_session()
        with self._store.lock:
            for watches in self._store.watches.values():
                for item in [w for w in watches if w[1] is self._dispatcher]:
                    watches.discard(item)
        self._closed = True
        self._dispatcher.close()

    def forget_after_fork(self) -> None:
        """Nothing to drop: the child's copy of the store is its own."""

    def ping(self) -> str:
        return "in-process memory store"

    # -- session ----------------------------------------------------------
    def open_session(self, ttl: float) -> str:
        session_id = uuid.uuid4().hex
        with self._store.lock:
            self._store.sessions[session_id] = _Session(ttl, time.monotonic() + ttl, time.time(), self)
            self._store._reaper_wake.notify()
        self._session_id = session_id
        return session_id

    def refresh_session(self) -> None:
        with self._store.lock:
            session = self._store.sessions.get(self._session_id or "")
            if session is None or session.deadline <= time.monotonic():
                raise SessionExpired("the memory session expired")
            session.deadline = time.monotonic() + session.ttl
            session.last_seen = time.time()

    def close_session(self) -> None:
        if self._session_id is not None:
            self._store.end_session(self._session_id)
            self._session_id = None

    def expire_session(self, session_id: str) -> bool:
        session = self._store.end_session(session_id)
        if session is None:
            return False
        session.backend._session_lost()
        return True

    def session_last_seen(self, session_id: str) -> float | None:
        with self._store.lock:
            session = self._store.sessions.get(session_id)
            return session.last_seen if session else None

    # -- keys -------------------------------------------------------------
    def _owner(self, ephemeral: bool) -> str | None:
        if self._closed:
            raise CoordinatorClosed("this memory backend is closed")
        if not ephemeral:
            return None
        with self._store.lock:
            if self._session_id is None or not self._store._locked_live_session(self._session_id):
                raise SessionExpired("the memory session expired; ephemeral keys need a live session")
        return self._session_id

    def get(self, key: str) -> Entry | None:
        with self._store.lock:
            return self._store.data.get(key)

    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        owner = self._owner(ephemeral)
        with self._store.lock:
            if key in self._store.data:
                return None
            entry = Entry(key, bytes(value), next(self._store.versions), None, owner)
            self._store.data[key] = entry
            self._store._locked_changed(key)
            return entry

    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        with self._store.lock:
            old = self._store.data.get(key)
            if old is None or old.version != version:
                return None
            entry = old._replace(value=bytes(value), version=next(self._store.versions))
            self._store.data[key] = entry
            self._store._locked_changed(key)
            return entry

    def delete(self, key: str, version: int | None = None) -> bool:
        with self._store.lock:
            old = self._store.data.get(key)
            if old is None or (version is not None and old.version != version):
                return False
            del self._store.data[key]
            self._store._locked_changed(key)
            return True

    def list(self, prefix: str) -> list[Entry]:
        with self._store.lock:
            return sorted((e for k, e in self._store.data.items() if k.startswith(prefix)), key=lambda e: e.key)

    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        owner = self._owner(ephemeral)
        with self._store.lock:
            seq = self._store.counters.get(prefix, 0) + 1
            self._store.counters[prefix] = seq
            key = f"{prefix}{seq:020d}"
            entry = Entry(key, bytes(value), next(self._store.versions), seq, owner)
            self._store.data[key] = entry
            self._store._locked_changed(key)
            return entry

    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        def forget(watch: CallbackWatch) -> None:
            with self._store.lock:
                self._store.watches.get(key, set()).discard((watch, self._dispatcher))

        watch = CallbackWatch(callback, forget)
        with self._store.lock:
            self._store.watches.setdefault(key, set()).add((watch, self._dispatcher))
        return watch
