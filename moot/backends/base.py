"""The primitive protocol every backend implements.

Recipes (locks, groups, elections, ...) are written once, on these primitives
only. A backend maps each primitive onto its engine and adds no recipe logic
of its own. What each primitive guarantees is stated here; the primitive
contract suite (``tests/conformance/test_primitives.py``) checks every
statement on every backend, and the behavioural suite (the rest of
``tests/conformance``) checks the recipes built on them.

Keys
    A key is a ``/``-separated path of segments made of ``[A-Za-z0-9_%-]``
    (recipes build them; user names are escaped by :mod:`moot.names`). A
    *prefix* is a key path ending in ``/``. Values are bytes. Every stored key
    has a *version*, an int that changes on every write of that key (use it
    for compare-and-set / compare-and-delete).

Sessions
    A backend object holds at most one session at a time, opened with a TTL.
    The coordinator's heartbeat calls :meth:`Backend.refresh_session` about
    every ``ttl / 3``. When the session ends (closed, expired because it was
    not refreshed within its TTL, evicted, or its process died) every
    *ephemeral* key created under it disappears, and watches on those keys
    fire. A backend that learns on its own that its session ended calls the
    listener given to :meth:`Backend.set_session_listener`. Where
    :attr:`Backend.kept_alive_by_client` is True the engine keeps a session
    alive without ``refresh_session`` while its process lives and stays
    connected (ZooKeeper's client pings by itself; a file:// session is its
    process's flock): it then ends when the process dies, is cut off for the
    TTL, or is evicted. Either way the engine never ends a session early.

Sequence
    :meth:`Backend.create_sequential` creates a key under a prefix with a
    number ``seq`` strictly greater than that of every key ever created under
    the same prefix, across restarts of every client, as long as the engine
    keeps its data. This one primitive gives FIFO queues and fencing tokens.

Watch
    :meth:`Backend.watch` calls back (with no arguments, on a backend thread)
    at least once after any change to the watched key (exact key) or to any
    key directly under the watched prefix, made after ``watch()`` returned:
    creation, update, deletion, or disappearance because its session ended.
    Spurious calls are allowed; callers re-read state after a call. Callbacks
    must be quick and must not call back into the backend on that thread.
    Where an engine has no notifications the backend polls, with backoff,
    inside itself.

Deadlines
    Every primitive returns or raises within the caller's deadline
    (:func:`moot.deadline.remaining`, which is at most the backend's own
    per-call bound, the ``timeout`` option) plus a small slack, however the
    engine misbehaves: down, refusing connections, or accepting them and
    never answering. Running out of time raises ConnectionLost whose message
    states the real elapsed time.

Session validity
    After :meth:`Backend.open_session` or :meth:`Backend.refresh_session`
    returns, the engine does not end the session (for lack of renewal)
    before the instant the call *started* plus :attr:`Backend.granted_ttl`.
    The coordinator counts from that instant and gives up a safety margin
    earlier, so a holder is told before the engine can hand its locks to
    anyone else. A backend whose engine may grant another TTL than the one
    asked (ZooKeeper caps it, etcd rounds it up) sets ``granted_ttl`` to what
    was actually granted.

Values
    Every backend stores values of up to :data:`MAX_VALUE_BYTES` bytes;
    recipes refuse larger ones before any I/O.

Fork
    In a forked child, :meth:`Backend.forget_after_fork` drops what the
    child inherited without any I/O: the parent's session, connections and
    file locks stay the parent's.

Errors
    Primitives raise :class:`moot.errors.ConnectionLost` when the engine
    cannot be reached and :class:`moot.errors.SessionExpired` when an
    operation needs the session and it is gone. Nothing else is expected.
"""

from __future__ import annotations

import abc
import builtins
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from moot import realthreads
from moot.realthreads import threading
from moot.url import BackendURL
from moot.waits import Wake

#: The largest value any backend stores (ZooKeeper's default frame limit is
#: 1 MiB, etcd's request limit 1.5 MiB; this leaves room for key and framing).
MAX_VALUE_BYTES = 512 * 1024


class Entry(NamedTuple):
    """One stored key, as read from the backend.

    ``seq`` is set for keys made by :meth:`Backend.create_sequential` (the
    backend may set it for others too). ``owner`` is the session id that an
    ephemeral key is bound to, ``None`` for a persistent key.

    Immutable, and a named tuple rather than a frozen dataclass: made for
    every entry of every listing and of every acquire, it is built in less
    than half the time.
    """

    key: str
    value: bytes
    version: int
    seq: int | None = None
    owner: str | None = None


class Watch(abc.ABC):
    """A registered watch; ``cancel()`` stops its callbacks (idempotent): no
    call starts after it returns, though one that another thread had already
    begun may still be running."""

    #: Set where the engine told that the watched key was deleted (before
    #: the call that tells of it) or, as the watch was armed, is absent, on
    #: the connection of this backend's session with this id, which it
    #: serves only while that session lives (ZooKeeper): that session and
    #: its ephemeral keys were alive when the key was gone. None: not known
    #: (any other backend, or any other change).
    deleted_while: str | None = None

    def cleared_for(self, mine: Entry, ahead: Sequence[Entry]) -> bool:
        """Whether the engine told of the watched key's deletion at a moment
        when every entry of ``ahead`` (the entries before ``mine`` in its
        queue as last read; the watched key is the last) was gone and
        ``mine``, a key of this backend's session, still there. False where
        that is not known. Set before the call that tells of the change."""
        return len(ahead) == 1 and self.deleted_while is not None and self.deleted_while == mine.owner

    def will_ask_cleared(self, mine: Entry, ahead: Sequence[Entry]) -> None:  # noqa: B027 (optional hook)
        """Said once the watch is armed: :meth:`cleared_for` will be asked
        with these, once the watched key changes. A backend that must read
        to answer may start that read the moment the engine tells of the
        change, before the waiter's thread even runs (base: nothing)."""

    @abc.abstractmethod
    def cancel(self) -> None: ...


class CallbackWatch(Watch):
    """A watch that is a callback plus a cancel action; the common case."""

    def __init__(self, callback: Callable[[], None], on_cancel: Callable[[CallbackWatch], None]):
        self.callback = callback
        self._on_cancel = on_cancel
        self.cancelled = False
        #: The callback only wakes a waiter (:meth:`moot.waits.Wake.set`): a
        #: backend may call it on its own thread, which never blocks on it,
        #: instead of handing it to a dispatcher thread: one thread switch
        #: less between a release and the next holder's wake-up.
        self.quick = isinstance(getattr(callback, "__self__", None), Wake)

    def fire(self) -> None:
        if not self.cancelled:
            self.callback()

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._on_cancel(self)


class Backend(abc.ABC):
    """The primitives of one connection to a coordination engine.

    Instances are thread-safe: the coordinator's heartbeat thread, watch
    threads and application threads call them concurrently.
    """

    #: URL/keyword options this backend understands beyond the coordinator's
    #: (ttl, namespace, timeout, heartbeat, *_reconnect_backoff).
    OPTIONS: frozenset[str] = frozenset()
    #: True where the session outlives missed refreshes while its process
    #: lives and stays connected (see "Sessions" above).
    kept_alive_by_client: bool = False
    #: False where no primitive waits on anything but this host's own short
    #: critical sections (file://, memory://), so none reads the caller's
    #: deadline: the session then does not set it around every call (a
    #: context variable set and reset: a tenth of an uncontended cycle).
    reads_deadline: bool = True

    def __init__(self, url: BackendURL, options: dict[str, object]):
        self.url = url
        self.options = options
        self._session_listener: Callable[[], None] | None = None
        #: The TTL the engine granted to the current session (see "Session
        #: validity"); ``open_session`` sets it when it differs from the one asked.
        self.granted_ttl: float | None = None

    # -- lifecycle --------------------------------------------------------
    @abc.abstractmethod
    def connect(self, timeout: float) -> None:
        """Reach the engine within ``timeout`` seconds or raise ConnectionLost."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the session (its ephemeral keys vanish), cancel every watch and
        drop connections. Never raises; safe to call twice."""

    @abc.abstractmethod
    def forget_after_fork(self) -> None:
        """In a forked child: drop inherited connections and file descriptors
        without any I/O on them (no protocol message, no unlock, no
        shutdown), so the parent's session is left exactly as it was."""

    @abc.abstractmethod
    def ping(self) -> str:
        """One round trip to the engine; returns a description of the server."""

    # -- session ----------------------------------------------------------
    @abc.abstractmethod
    def open_session(self, ttl: float) -> str:
        """Open a new session with time-to-live ``ttl`` seconds; return its id.

        Ephemeral keys created from then on are bound to it. Any previous
        session of this backend object must already be closed or expired.
        """

    @abc.abstractmethod
    def refresh_session(self) -> None:
        """Keep the session alive for another TTL: one round trip, however
        many keys it owns. Raises SessionExpired if it is already gone."""

    @abc.abstractmethod
    def close_session(self) -> None:
        """End the session now; its ephemeral keys vanish. Never raises for a
        session that is already gone."""

    @abc.abstractmethod
    def expire_session(self, session_id: str) -> bool:
        """End any session now, as if its TTL had run out (eviction).

        Its ephemeral keys vanish and its owner learns on its next refresh.
        Returns False if no such session was alive.
        """

    @abc.abstractmethod
    def session_last_seen(self, session_id: str) -> float | None:
        """Wall-clock time the session was last known alive, None if it is gone."""

    def set_session_listener(self, listener: Callable[[], None]) -> None:
        """Register the callable to run when the backend learns that its
        session ended (without a refresh being asked for)."""
        self._session_listener = listener

    def _session_lost(self) -> None:
        listener = self._session_listener
        if listener is not None:
            listener()

    # -- keys -------------------------------------------------------------
    @abc.abstractmethod
    def get(self, key: str) -> Entry | None:
        """The live entry at ``key``, or None."""

    @abc.abstractmethod
    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        """Create ``key`` if absent; return the new entry, or None if it exists."""

    @abc.abstractmethod
    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        """Overwrite ``key`` if its version is still ``version``; keeps the
        key's owner and seq. Returns the new entry, or None on mismatch/absence."""

    @abc.abstractmethod
    def delete(self, key: str, version: int | None = None) -> bool:
        """Delete ``key`` (only at ``version`` if given); True if deleted."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[Entry]:
        """Every live entry whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        """Create a new key directly under ``prefix`` with a fresh ``seq``
        (see the module docstring); return it."""

    @abc.abstractmethod
    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        """Watch one key, or every key directly under a prefix (``key`` ending
        in ``/``). See the module docstring for the guarantee."""

    # -- compound operations (override to save round trips) ---------------
    def names(self, directory: str) -> builtins.list[str]:
        """The names of the live entries directly under ``directory`` (a
        prefix ending in ``/`` that holds entries only, no deeper keys, like
        a group's members), sorted: the key after ``directory``. A listing
        without the values, for engines that can skip reading them."""
        return [e.key[len(directory):] for e in self.list(directory) if "/" not in e.key[len(directory):]]

    def watch_unchanged(self, entry: Entry, callback: Callable[[], None]) -> tuple[Watch, bool]:
        """Watch ``entry``'s key (as :meth:`watch`) and say whether, once the
        watch is armed, the key still holds ``entry``'s version (False: it
        changed or went; re-read). Engines whose watch reads the key as it
        arms answer with that one round trip."""
        watch = self.watch(entry.key, callback)
        return watch, self._still_holds(watch, entry)

    def _still_holds(self, watch: Watch, entry: Entry) -> bool:
        """Whether ``entry``'s key, read now (``watch`` is armed), still holds
        its version; ``watch`` is cancelled if the read fails."""
        try:
            current = self.get(entry.key)
        except BaseException:
            watch.cancel()
            raise
        return current is not None and current.version == entry.version

    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """Create an ephemeral sequential key under ``prefix`` and return it
        with the live entries under ``prefix`` at that moment (which include it).
        A queue's prefix holds no directories, so an engine may list only the
        entries directly under it."""
        entry = self.create_sequential(prefix, value, ephemeral=True)
        return entry, self.list(prefix)

    def sweep(self, directories: Sequence[str]) -> None:  # noqa: B027 (optional hook)
        """The caller is done with ``directories`` for now (prefixes ending in
        ``/``, each inside the one after it: a lock's queue, then its name).
        The caller's layout guarantees that none of them is ever a key. An
        engine that keeps an object per directory (ZooKeeper's parent znodes,
        which are never removed by themselves) removes each one that is empty
        later, off the caller's path, so that names used once (a lock per
        volume) leave nothing behind. A directory in use again is left, or is
        made again by the next creation in it. No I/O here; never raises."""


class Dispatcher:
    """A daemon thread that runs callbacks in order, off the caller's thread
    and outside any backend lock. Backends may share this helper.

    ``submit`` may be called from any thread. With ``application=True`` the
    thread is of the application's kind (a green thread once eventlet has
    monkey-patched the process), so user callbacks can use what the
    application uses; otherwise it is a real OS thread."""

    def __init__(self, name: str, *, application: bool = False):
        self._queue: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._ready = realthreads.Event()
        self._closed = False
        self._kind = sys.modules["threading"] if application else threading
        self._thread = self._kind.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def fire(self, watch: CallbackWatch) -> None:
        """Call ``watch``'s callback: at once, on the calling thread, when it
        only wakes a waiter (``quick``); otherwise on the dispatcher thread."""
        if watch.quick:
            watch.fire()
        else:
            self.submit(watch.fire)

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if not self._closed:
                self._queue.append(fn)
                self._ready.set()

    def _run(self) -> None:
        while True:
            self._ready.wait()
            with self._lock:
                self._ready.clear()
                batch, self._queue = self._queue, []
                closed = self._closed
            for fn in batch:
                try:
                    fn()
                except Exception:  # a failing callback must not stop the others
                    logging.getLogger("moot.backends").exception("watch callback failed")
            if closed:
                return

    def close(self, timeout: float = 1.0) -> None:
        """Stop after the callbacks already submitted; wait up to ``timeout``
        for them, except for a green thread (under eventlet it is left to
        finish by itself: joining it from the hub's own thread can hang)."""
        with self._lock:
            self._closed = True
            self._ready.set()
        if self._kind is not threading:
            return  # an application green thread
        if self._kind.current_thread() is not self._thread:
            self._thread.join(timeout)
