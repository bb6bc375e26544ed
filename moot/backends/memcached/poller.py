"""Watches: memcached sends no notifications, so one real OS thread per
backend object polls what is watched, and this object's own writes wake
its watchers at once.

A round is ONE pipeline, whatever is watched: the CAS value of every
watched directory item (no value is sent) and, at most once per
``poll_interval``, the session item of every owner of an entry there (plus
this object's own session). Only directories
whose CAS value moved (or came from another server run: the server restarted),
or that hold an entry of a session found gone, are
read again (a second round trip); a watch fires when the live entries it
covers differ from what it last saw (a prefix watch: any entry directly
under it; a key watch: that entry's version, or its presence). Rounds
come 1 ms after a round that saw a watched directory change, the pause
growing by half up to ``poll_interval`` while nothing changes, and stop while
nothing is watched. The quick rounds after a change look at the directories
only: an owner's death is seen within one ``poll_interval`` either way (the
rounds come that far apart once nothing changes), and a waiter's round then
costs one read per directory it watches, not one per owner as well.

A key watch woken by a round's read keeps what that read found
(:meth:`_Handle.cleared_for`): a lock waiter whose predecessor is gone is
then served on it, without reading its queue again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from moot.backends.base import CallbackWatch, Dispatcher, Entry, Watch
from moot.backends.memcached.dirs import Directory
from moot.backends.memcached.store import Runner, Store
from moot.errors import BackendError, ConnectionLost, CoordinatorClosed
from moot.realthreads import threading

log = logging.getLogger("moot.backends.memcached")

_IDLE_WAIT = 60.0  # seconds the thread sleeps with nothing watched (a new watch wakes it)
_RETRY_PAUSE = 0.2  # seconds between rounds while the server cannot be reached
_FASTEST = 0.001  # seconds between rounds right after a watched directory changed


class _Handle(CallbackWatch):
    """A watch and where it is: a directory, and a leaf (None: the whole directory)."""

    def __init__(self, callback: Callable[[], None], on_cancel: Callable[[CallbackWatch], None], path: str,
                 leaf: str | None):
        super().__init__(callback, on_cancel)
        self.path, self.leaf = path, leaf
        #: The live entries' versions by leaf as a poll round read them when
        #: it last woke this watch: one read of the directory item and of
        #: the session of every owner there (``Store.read``: an entry whose
        #: owner was not found alive in it is not among them). None when the
        #: last wake came from anything else (this object's own write).
        self.read: dict[str, int] | None = None

    def cleared_for(self, mine: Entry, ahead: Sequence[Entry]) -> bool:
        """The read that woke this watch found every entry of ``ahead`` gone
        and ``mine`` there at its version, its owner's session alive: what a
        waiter's own read of its queue would find, made after the change."""
        read = self.read
        if read is None:
            return False
        own, others = self._leaf(mine.key), [self._leaf(entry.key) for entry in ahead]
        if own is None or None in others:
            return False
        return read.get(own) == mine.version and all(leaf not in read for leaf in others)

    def _leaf(self, key: str) -> str | None:
        """``key``'s leaf if it lies directly in this watch's directory."""
        if not key.startswith(self.path):
            return None
        leaf = key[len(self.path):]
        return leaf if leaf and "/" not in leaf else None


class _Target:
    """One watched directory: its watches, and the live entries last seen there."""

    def __init__(self, seen: Directory):
        self.path = seen.path
        self.prefix: set[CallbackWatch] = set()
        self.keys: dict[str, set[CallbackWatch]] = {}
        self.cas = (seen.server, seen.cas)
        self.versions = seen.versions()
        self.owners = seen.owners()

    def empty(self) -> bool:
        return not self.prefix and not self.keys

    def update(self, seen: Directory, fresh: bool = False) -> set[CallbackWatch]:
        """Take ``seen`` (live entries only) as the new state; the watches it
        wakes. ``fresh``: ``seen`` is a poll round's read (``Store.read``),
        which the key watches it wakes keep (:attr:`_Handle.read`).

        A state older than the one already taken is ignored: a poll round's
        read can be overtaken by a write of this object (:meth:`Poller.changed`),
        and taking the older state after it would make the next change look
        like no change (a key created, then deleted, compared to the state
        before it was created). Within one server run a later write has a
        greater CAS value; an absent item (CAS 0) cannot be ordered."""
        server, cas = self.cas
        if seen.server == server and 0 < seen.cas < cas:
            return set()
        versions = seen.versions()
        woken: set[CallbackWatch] = set()
        if versions != self.versions:
            woken |= self.prefix
            for leaf, watches in self.keys.items():
                if versions.get(leaf) != self.versions.get(leaf):
                    for handle in watches:
                        if isinstance(handle, _Handle):
                            handle.read = versions if fresh else None
                    woken |= watches
        self.cas, self.versions, self.owners = (seen.server, seen.cas), versions, seen.owners()
        return woken


class Poller:
    """The watch thread of one backend object (see the module docstring)."""

    def __init__(self, store: Store, run: Runner, dispatcher: Dispatcher, own_session: Callable[[], str | None],
                 own_session_gone: Callable[[str], None], interval: float, timeout: float):
        self._store = store
        self._run = run
        self._dispatcher = dispatcher
        self._own_session = own_session
        self._own_session_gone = own_session_gone
        self._fastest, self._slowest = min(_FASTEST, interval), interval
        self._timeout = timeout
        self._lock = threading.Lock()  # real; held for no I/O
        self._targets: dict[str, _Target] = {}
        self._owners_due = 0.0  # monotonic time of the next round that probes the owners' sessions
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="moot-memcached-poll", daemon=True)
        self._thread.start()

    def watch(self, path: str, leaf: str | None, callback: Callable[[], None],
              read: Callable[[str], Directory]) -> Watch:
        """Watch directory ``path`` (``leaf`` None) or one key in it; ``read``
        takes the first state of a directory not yet watched (caller's deadline)."""
        handle = _Handle(callback, self._cancel, path, leaf)
        seen: Directory | None = None
        while True:
            with self._lock:
                target = self._targets.get(path)
                if target is None and seen is not None:
                    target = self._targets[path] = _Target(seen)
                if target is not None:
                    if leaf is None:
                        target.prefix.add(handle)
                    else:
                        target.keys.setdefault(leaf, set()).add(handle)
                    break
            seen = read(path)
        self._wake.set()
        return handle

    def _cancel(self, handle: CallbackWatch) -> None:
        assert isinstance(handle, _Handle)
        with self._lock:
            target = self._targets.get(handle.path)
            if target is None:
                return
            if handle.leaf is None:
                target.prefix.discard(handle)
            else:
                watches = target.keys.get(handle.leaf, set())
                watches.discard(handle)
                if not watches:
                    target.keys.pop(handle.leaf, None)
            if target.empty():
                del self._targets[handle.path]

    def changed(self, seen: Directory) -> None:
        """A directory this object has just written (``seen``: as written)."""
        live = self._store.without_dead(seen)
        with self._lock:
            target = self._targets.get(seen.path)
            woken = target.update(live) if target is not None else set()
        self._fire(woken)

    def session_ended(self, session_id: str) -> None:
        """This object ended ``session_id``: wake the watchers of its entries now."""
        self._store.mark_dead([session_id])
        woken: set[CallbackWatch] = set()
        with self._lock:
            for target in self._targets.values():
                if session_id in target.owners:
                    woken |= target.prefix | {w for ws in target.keys.values() for w in ws}
        self._fire(woken)
        self._wake.set()

    def _fire(self, woken: set[CallbackWatch]) -> None:
        for handle in woken:
            self._dispatcher.fire(handle)

    # -- the thread ---------------------------------------------------------
    def _loop(self) -> None:
        pause = self._fastest
        while True:
            with self._lock:
                idle = not self._targets
            self._wake.wait(_IDLE_WAIT if idle else pause)
            self._wake.clear()
            if self._closed:
                return
            if idle:
                pause = self._fastest
                continue
            try:
                changed = self._round()
            except CoordinatorClosed:
                return
            except (ConnectionLost, BackendError, OSError) as exc:
                log.debug("a memcached watch round failed: %s", exc)
                pause = max(self._slowest, _RETRY_PAUSE)
                continue
            except Exception:  # the thread must go on: watches are polled nowhere else
                log.exception("a memcached watch round failed")
                pause = max(self._slowest, _RETRY_PAUSE)
                continue
            pause = self._fastest if changed else min(pause * 1.5, self._slowest)

    def _round(self) -> bool:
        """One poll of everything watched; True if a watched directory changed
        (a waiter's turn tends to come soon after its neighbours' changes)."""
        now = time.monotonic()
        until = now + self._timeout
        with self._lock:
            cas = {path: t.cas for path, t in self._targets.items()}
            owners = {o for t in self._targets.values() for o in t.owners}
        own: str | None = None
        sessions: list[str] = []
        if now >= self._owners_due:
            self._owners_due = now + self._slowest
            own = self._own_session()
            sessions = sorted({o for o in owners if not self._store.is_dead(o)} | ({own} if own else set()))
        now_cas, alive = self._store.probe(list(cas), sessions, until, self._run)
        if own is not None and not alive[own]:
            self._own_session_gone(own)
        with self._lock:  # a target added during the probe was read when it was added: next round
            stale = [path for path, t in self._targets.items() if path in cas and (
                     now_cas[path] != cas[path] or any(self._store.is_dead(o) for o in t.owners))]
        if not stale:
            return False
        seen = self._store.read(stale, until, self._run)
        woken: set[CallbackWatch] = set()
        with self._lock:
            for path, directory in seen.items():
                target = self._targets.get(path)
                if target is not None:
                    woken |= target.update(directory, fresh=True)
        self._fire(woken)
        return True

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._targets.clear()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(1.0)

    def forget(self) -> None:
        """In a forked child: the thread stayed in the parent; drop the state."""
        self._closed = True
        self._targets = {}
