"""Watches on ZooKeeper's one-shot watches: a key watch is a data watch on
its znode (or a child watch on its parent while it is absent), a prefix watch
a child watch plus a data watch on each child, every one re-armed before
its callbacks run and again after a reconnection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent

from moot.backends.base import CallbackWatch, Entry, Watch
from moot.backends.zookeeper.client import _bounded, _Client
from moot.backends.zookeeper.connection import Result, _Conn, _hex
from moot.backends.zookeeper.handler import _real_time
from moot.backends.zookeeper.znodes import _SEGMENT, _as_prefix, _is_prefix, _parent
from moot.errors import MootError
from moot.realthreads import threading
from moot.realthreads import wait_until as _await


class _KeyWatch(CallbackWatch):
    """A key's watch that, asked to (:meth:`will_ask_cleared`, a lock waiter
    with more than one entry ahead), lists the key's parent the moment the
    engine tells of the key's deletion: on kazoo's callback thread, before
    the waiter's thread runs. On a ZooKeeper that fsyncs, a read that comes
    after the releaser's next write waits for that write's fsync; sent at
    once, it usually comes before."""

    def __init__(self, key: str, callback: Callable[[], None], on_cancel: Callable[[CallbackWatch], None],
                 wait: Callable[..., Any]):
        super().__init__(callback, on_cancel)
        self.key = key
        self._wait = wait
        #: Set as the engine's deletion notice is handled: the children of the
        #: key's parent, read after the deletion (a kazoo result).
        self.listing: Result | None = None
        self.wants_listing = False

    def will_ask_cleared(self, mine: Entry, ahead: Sequence[Entry]) -> None:
        directory = self.key.rpartition("/")[0]
        self.wants_listing = len(ahead) > 1 and all(
            entry.key.rpartition("/")[0] == directory for entry in (mine, *ahead))

    def cleared_for(self, mine: Entry, ahead: Sequence[Entry]) -> bool:
        """Also true where the listing read after the deletion has ``mine``
        and none of ``ahead``: no entry can come back before mine (every new
        one is named after it), and mine, an ephemeral znode, was there with
        its session after the deletion."""
        if super().cleared_for(mine, ahead):
            return True
        listing = self.listing
        if listing is None or not self.wants_listing:
            return False
        try:
            names = set(self._wait(listing, NoNodeError))
        except (NoNodeError, MootError):
            return False  # the waiter reads the queue itself
        directory = self.key.rpartition("/")[0]
        return all(entry.key.rpartition("/")[0] == directory for entry in (mine, *ahead)) \
            and mine.key.rpartition("/")[2] in names \
            and not any(entry.key.rpartition("/")[2] in names for entry in ahead)


class _Watches(_Client):
    """The watch primitive."""

    @_bounded
    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        return self._add(key, callback)[0]  # if not armed yet, the reconnection arms it and calls back

    @_bounded
    def watch_unchanged(self, entry: Entry, callback: Callable[[], None]) -> tuple[Watch, bool]:
        """The data watch's own read answers whether the key changed: one
        round trip. Read apart only where this call did not arm the watch
        (the key was watched already, or the connection is not live)."""
        watch, armed = self._add(entry.key, callback)
        if armed is not None:
            return watch, armed == (entry.version,)
        return watch, self._still_holds(watch, entry)

    def _add(self, key: str, callback: Callable[[], None]) -> tuple[CallbackWatch, tuple[int | None, ...] | None]:
        """Register a watch on ``key``; if it is the key's first, on a live
        connection, arm it within the deadline. Also what arming answered
        (for a key: its version as read, None if absent); None where this
        call did not arm it, or got no answer in time."""
        watch = _KeyWatch(key, callback, lambda w: self._unwatch(key, w), self._wait)
        with self._lock:
            first = key not in self._watches
            self._watches.setdefault(key, set()).add(watch)
            conn = self._conn
            if first and conn is not None and _is_prefix(key):
                conn.children.pop(self._dir(key), None)  # arm a data watch on every child again
        if first and conn is not None and conn.live.is_set():
            answers: list[tuple[int | None, ...]] = []
            armed = threading.Event()

            def done(*answer: int | None) -> None:
                answers.append(answer)
                armed.set()

            def absent(sid: int | None) -> None:
                if sid is not None:
                    watch.deleted_while = _hex(sid)

            self._arm(conn, key, done, absent)
            if _await(armed.is_set, armed.wait, self._budget()):
                return watch, answers[0]
        return watch, None

    def _unwatch(self, key: str, watch: CallbackWatch) -> None:
        with self._lock:
            watches = self._watches.get(key)
            if watches is None:
                return
            watches.discard(watch)
            if not watches:
                del self._watches[key]
                conn = self._conn
                if conn is not None and _is_prefix(key):
                    conn.children.pop(self._dir(key), None)
                elif conn is not None:
                    conn.absent.discard(self._path(key))

    def _fire(self, *keys: str, deleted_while: str | None = None,
              listing: Callable[[], Result] | None = None) -> None:
        """Have the dispatcher thread call the watches of ``keys`` (never
        kazoo's threads, which must not block), in the order submitted; a
        waiter's wake-up (``quick``) is set at once, on this thread.
        ``deleted_while``: the key was deleted, as an event on the connection
        of this session told (:attr:`Watch.deleted_while`). ``listing``:
        sends the read of the deleted key's parent, for the watches that
        want it (:class:`_KeyWatch`), before any is called."""
        with self._lock:
            watches = [w for key in keys for w in self._watches.get(key, ())]
            if deleted_while is not None:
                for watch in watches:
                    watch.deleted_while = deleted_while
            wanting = [w for w in watches if isinstance(w, _KeyWatch) and w.wants_listing]
        if listing is not None and wanting:
            sent = listing()
            for watch in wanting:
                watch.listing = sent
        dispatcher = self._dispatcher
        if dispatcher is not None:
            for watch in watches:
                dispatcher.fire(watch)

    def _arm(self, conn: _Conn, key: str, done: Callable[..., None],
             absent: Callable[[int | None], None] | None = None) -> None:
        if _is_prefix(key):
            self._arm_prefix(conn, self._dir(key), done)
        else:
            self._arm_key(conn, self._path(key), done, absent)

    def _rearm_all(self, conn: _Conn) -> None:
        """Arm every watch on ``conn``, then call every callback once."""
        with self._lock:
            keys = list(self._watches)
        if not keys:
            return
        remaining = [len(keys)]

        def one_done(*_: object) -> None:
            with self._lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._fire(*keys)

        for key in keys:
            self._arm(conn, key, one_done)

    def _arm_key(self, conn: _Conn, path: str, done: Callable[[int | None], None],
                 absent: Callable[[int | None], None] | None = None) -> None:
        """Data watch on ``path``, or while it is absent a child watch on its
        parent; then ``done(version)``: the key's version (``mzxid``) as the
        watch read it, None if absent (or unread). ``absent(session)`` is
        told first when the read found no such key, with the session it was
        read in (the server answers a session only while it lives)."""
        zk, parent = conn.zk, _parent(path)

        def on_get(result: Result) -> None:
            if result.successful():
                with self._lock:
                    conn.absent.discard(path)
                done(result.value[1].mzxid)
            elif isinstance(result.exception, NoNodeError):
                if absent is not None:
                    absent(conn.session())
                with self._lock:
                    watched = self._key(path) in self._watches
                    if watched:
                        conn.absent.add(path)
                    else:
                        conn.absent.discard(path)
                if watched:
                    zk.get_children_async(parent, watch=conn.watcher).rawlink(on_children)
                else:
                    done(None)  # cancelled meanwhile: leave no watch behind
            else:
                done(None)

        def on_children(result: Result) -> None:
            if result.successful():
                if path.rsplit("/", 1)[1] in result.value:
                    zk.get_async(path, watch=conn.watcher).rawlink(on_get)  # created meanwhile
                else:
                    done(None)
            elif isinstance(result.exception, NoNodeError):  # no parent either: watch the key itself
                zk.exists_async(path, watch=conn.watcher).rawlink(
                    lambda r: done(r.value.mzxid if r.successful() and r.value else None))
            else:
                done(None)

        zk.get_async(path, watch=conn.watcher).rawlink(on_get)

    def _arm_prefix(self, conn: _Conn, parent: str, done: Callable[[], None]) -> None:
        """Child watch on ``parent`` and a data watch on each new child; then ``done()``."""
        zk = conn.zk

        def on_children(result: Result) -> None:
            if not result.successful():
                if isinstance(result.exception, NoNodeError):
                    zk.exists_async(parent, watch=conn.watcher).rawlink(on_exists)
                else:
                    done()
                return
            names = {n for n in result.value if _SEGMENT.match(n)}
            with self._lock:
                key = self._key(parent)
                if key is None or _as_prefix(key) not in self._watches:
                    names = set()  # cancelled meanwhile
                armed = conn.children.setdefault(parent, set())
                armed &= names
                new = names - armed
                armed |= new
            if not new:
                done()
                return
            remaining = [len(new)]

            def on_child(name: str, child: Result) -> None:
                with self._lock:
                    if not child.successful():
                        conn.children.get(parent, set()).discard(name)
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last:
                    done()

            for name in new:
                zk.get_async(f"{parent}/{name}", watch=conn.watcher).rawlink(
                    lambda r, name=name: on_child(name, r))

        def on_exists(result: Result) -> None:
            if result.successful() and result.value is not None:
                zk.get_children_async(parent, watch=conn.watcher).rawlink(on_children)  # created meanwhile
            else:
                done()

        zk.get_children_async(parent, watch=conn.watcher).rawlink(on_children)

    def _on_event(self, conn: _Conn, event: WatchedEvent) -> None:
        """A one-shot watch fired (kazoo's callback thread: must not block)."""
        path = event.path
        if event.type == EventType.NONE or path is None:
            return  # connection state: _on_state re-arms everything
        parent = _parent(path)
        key, parent_key = self._key(path), self._key(parent)
        with self._lock:
            if conn is not self._conn or key is None:
                return
            key_watched = bool(key) and key in self._watches and event.type != EventType.CHILD
            dir_key = _as_prefix(key)
            dir_watched = dir_key in self._watches and event.type != EventType.CHANGED
            child_key = _as_prefix(parent_key) if parent_key is not None else None
            child_changed = child_key in self._watches and event.type == EventType.CHANGED
            if event.type in (EventType.CHANGED, EventType.DELETED):  # that data watch is spent
                conn.children.get(parent, set()).discard(path.rsplit("/", 1)[1])
            absent = [p for p in conn.absent if _parent(p) == path] \
                if event.type in (EventType.CHILD, EventType.DELETED) else []
        if key_watched:
            if event.type == EventType.DELETED:  # wake at once (a lock handoff); call again if re-created
                sid = conn.session()
                self._fire(key, deleted_while=None if sid is None else _hex(sid),
                           listing=lambda: conn.zk.get_children_async(parent))
                self._submit(lambda: self._rearm_deleted(conn, path, key))
            else:
                self._arm_key(conn, path, lambda _: self._fire(key))
        if dir_watched:
            self._arm_prefix(conn, path, lambda: self._fire(dir_key))
        if child_changed and child_key is not None:
            watched_child_key = child_key
            self._arm_prefix(conn, parent, lambda: self._fire(watched_child_key))
        for absent_path in absent:
            self._rearm_absent(conn, absent_path)

    def _rearm_deleted(self, conn: _Conn, path: str, key: str) -> None:
        """After a watched key's deletion, watch for its re-creation if it is
        still watched. Runs on the dispatcher after the callbacks, and first
        lets the woken threads run: a lock waiter cancels its watch at once,
        and its next requests then do not queue behind a useless re-arm. A
        change meanwhile is not missed: the re-arm reads the key and calls
        back if it exists."""
        _real_time.sleep(0)  # yield the GIL to the woken waiters
        with self._lock:
            if key not in self._watches or conn is not self._conn:
                return
        self._arm_key(conn, path, lambda version: self._fire(key) if version is not None else None)

    def _rearm_absent(self, conn: _Conn, path: str) -> None:
        """The parent of an absent watched key changed: call back if the key appeared."""
        key = self._key(path)
        if key is not None:
            self._arm_key(conn, path, lambda version: self._fire(key) if version is not None else None)

