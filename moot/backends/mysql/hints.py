"""Wake-up hints: a waiter blocked in the server learns of its predecessor's
release at once, instead of at the next poll.

The backend that makes a queue entry (``enqueue``) also takes a named lock
(``GET_LOCK``), the entry's *hint*, inside the entry's transaction, before
the commit makes the entry visible; its ``delete`` drops it right after the
commit that removes the entry, in the same round trip. A waiter watching
that entry blocks in ``GET_LOCK`` on the same name (one of a few worker
threads of its backend, each on a connection of its own), so the server
wakes it when the entry goes; it drops the name at once, and reads whether
the entry is gone: if so the watch fires.

A hint is only ever a wake-up: mutual exclusion, order and tokens come from
the rows alone, and every watch is also polled (:mod:`.poller`). A hint that
cannot help costs the waiter one round trip and leaves the watch to the
poller: a name that is free while its entry lives (the entry was made
without a hint, or its maker's connection closed), a name held by someone
else (another tenant of the server: names are server-wide), a Galera
cluster (``GET_LOCK`` is node-local there, and refused: hints are not used
at all). Names are server-wide, so they are not guessable from outside the
database: ``moot`` + a hash of (the database's hint salt, a random number
kept in its counters table, and the directory) + ``:`` + the entry's seq,
at most 45 characters; another user of the server sees only that some
names are held, and holding one of them itself only slows a wake-up down to
the next poll.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from moot.backends.base import CallbackWatch
from moot.backends.mysql import sql
from moot.backends.mysql.pool import Pool
from moot.realthreads import threading

log = logging.getLogger("moot.backends.mysql")

#: Seconds one blocking wait lasts before the worker checks its watch is still wanted.
SLICE = 1
#: Worker threads (each with its own connection) per backend: how many watches wait on hints at once.
WORKERS = 2

def prefix(salt: int, directory: bytes) -> str:
    """The hint names of the entries of ``directory``: this, then the seq."""
    digest = hashlib.sha1(b"%d\0%s" % (salt, directory)).hexdigest()
    return f"moot{digest[:20]}:"


class _Wait:
    """The watches waiting on one hint (a watch cancelled and made again for
    the same entry joins the wait in progress: no second worker blocks on it)."""

    __slots__ = ("key", "name", "watches")

    def __init__(self, name: str, key: bytes) -> None:
        self.name = name
        self.key = key
        self.watches: list[tuple[CallbackWatch, Callable[[], None]]] = []


class Waiters:
    """The worker threads of one backend that wait on hints, each on a
    connection of its own (a pool of one, from ``open_pool()``); callbacks
    run on them. ``statement`` is :data:`moot.backends.mysql.sql.HINT_WAIT`
    with the tables named."""

    def __init__(self, open_pool: Callable[[], Pool], statement: str):
        self._open_pool = open_pool
        self._statement = statement
        self._lock = threading.Lock()  # real, held for no I/O
        self._ready = threading.Condition(self._lock)
        self._waits: dict[str, _Wait] = {}  # by hint name, pending or in progress
        self._pending: list[_Wait] = []
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._pools: list[Pool] = []
        self._closed = False

    def wait(self, name: str, key: bytes, watch: CallbackWatch, dead: Callable[[], None]) -> None:
        """Fire ``watch`` once ``key`` is gone after its hint ``name`` was dropped;
        call ``dead`` instead if the hint cannot tell (the poller then does)."""
        with self._lock:
            if self._closed:
                return
            item = self._waits.get(name)
            if item is not None:
                item.watches.append((watch, dead))
                return
            item = self._waits[name] = _Wait(name, key)
            item.watches.append((watch, dead))
            self._pending.append(item)
            if self._idle == 0 and len(self._threads) < WORKERS:
                thread = threading.Thread(target=self._work, name="moot-mysql-hint", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._ready.notify()

    def close(self) -> None:
        """Stop the workers; a worker blocked in the server is cut off at once."""
        with self._lock:
            self._closed = True
            self._pending = []
            self._waits = {}
            pools = list(self._pools)
            self._ready.notify_all()
        for pool in pools:
            with contextlib.suppress(Exception):
                pool.interrupt()

    def forget(self) -> None:
        """In a forked child: the threads stayed in the parent; their connections are forgotten."""
        self._closed = True
        self._pending = []
        self._waits = {}
        for pool in self._pools:
            pool.forget()

    def _wanted(self, item: _Wait) -> bool:
        """Whether a watch still waits on ``item``; if none does, it is dropped (lock held)."""
        item.watches = [pair for pair in item.watches if not pair[0].cancelled]
        if item.watches and not self._closed:
            return True
        if self._waits.get(item.name) is item:
            del self._waits[item.name]
        return False

    def _next(self) -> _Wait | None:
        with self._lock:
            while True:
                if self._closed:
                    return None
                while self._pending:
                    item = self._pending.pop(0)
                    if self._wanted(item):
                        return item
                self._idle += 1
                self._ready.wait()
                self._idle -= 1

    def _end(self, item: _Wait, fire: bool) -> None:
        """Fire ``item``'s watches (or tell them the hint cannot help); later ones start a new wait."""
        with self._lock:
            if self._waits.get(item.name) is item:
                del self._waits[item.name]
            watches, item.watches = item.watches, []
        for watch, dead in watches:
            if fire:
                watch.fire()  # quick (contract): no hop to the dispatcher thread
            elif not watch.cancelled:
                dead()

    def _work(self) -> None:
        try:
            pool = self._open_pool()
        except Exception as exc:
            log.debug("mysql hint worker could not start: %s", exc)
            with self._lock:
                self._threads = [t for t in self._threads if t is not threading.current_thread()]
            return
        with self._lock:
            self._pools.append(pool)
            closed = self._closed
        if closed:
            pool.interrupt()
            return
        while (item := self._next()) is not None:
            try:
                self._serve(pool, item)
            except Exception as exc:  # the engine is away: the poller covers the watch
                log.debug("mysql hint wait failed: %s", exc)
                self._end(item, fire=False)
                with self._lock:
                    if self._closed:
                        return
                time.sleep(0.1)
        pool.close()

    def _serve(self, pool: Pool, item: _Wait) -> None:
        while True:
            with self._lock:
                if not self._wanted(item):
                    return
            results = pool.run(self._statement, [item.name, SLICE, item.name, item.key], time.monotonic() + SLICE + 5)
            taken, present = sql.hint_outcome(results)
            if taken is None:  # refused (e.g. a Galera node): no hint from this server
                self._end(item, fire=False)
                return
            if int(taken):  # free while the entry lives: this hint will never be dropped
                self._end(item, fire=not int(present))
                return


class Holder:
    """The hints of one backend's own queue entries, held on a connection of
    their own (``call(statement, args)`` runs a batch on it, moot errors
    out). One caller at a time: a caller that finds it busy goes without a
    hint (:meth:`enqueue` and :meth:`delete` return None; the caller then
    runs the plain statement on the pool), so it never waits for another."""

    def __init__(self, call: Callable[[str, Any], list[Any]], salt: int):
        self._run = call
        self._salt = salt
        self._busy = threading.Lock()  # real, never waited for (green threads too)
        self._held: dict[bytes, str] = {}  # entry key -> its hint, taken on the holder's connection
        self._stale: list[str] = []  # hints to drop, their entries deleted without them
        self._reset = False  # the session ended: drop every hint held

    def enqueue(self, statement: str, directory: bytes, args: dict[str, Any]) -> list[Any] | None:
        """The results of ``statement`` (:data:`~moot.backends.mysql.sql.ENQUEUE_HINTED`), which takes the hint."""
        if not self._busy.acquire(blocking=False):
            return None
        try:
            self._flush()
            hint = prefix(self._salt, directory)
            results = self._run(statement, {**args, "hint": hint})
            seq, made = sql.outcome(results)
            if made:
                self._held[directory + b"%020d" % seq] = f"{hint}{seq}"
            return results
        finally:
            self._busy.release()

    def delete(self, key: bytes, statement: str, args: dict[str, Any]) -> list[Any] | None:
        """The results of ``statement`` (:data:`~moot.backends.mysql.sql.DELETE_HINTED`), which drops
        ``key``'s hint; None if this backend holds none for it (or is busy: it is dropped later)."""
        hint = self._held.pop(key, None)
        if hint is None:
            return None
        if not self._busy.acquire(blocking=False):
            self._stale.append(hint)
            return None
        try:
            self._flush()
            return self._run(statement, {**args, "hint": hint})
        finally:
            self._busy.release()

    def session_ended(self) -> None:
        """Every entry of the session is gone: drop their hints with the next call."""
        if self._held or self._stale:
            self._reset = True
            self._held.clear()
            self._stale.clear()

    def _flush(self) -> None:
        if self._reset:
            self._reset = False
            self._run("DO RELEASE_ALL_LOCKS()", [])
        elif self._stale:
            stale, self._stale = self._stale, []
            self._run("DO " + ", ".join(["RELEASE_LOCK(%s)"] * len(stale)), stale)
