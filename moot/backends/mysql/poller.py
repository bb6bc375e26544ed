"""Watches without notifications: one real thread per backend polls the
counters of the watched directories, with backoff, and re-checks them when
an owner session of an entry there would expire.

Guarantees: a watch fires at least once after any change of its directory
made after ``watch()`` returned (its baseline is the directory's counter,
read before it returns, or the one already polled): a write by any client
(seen by the next poll, at most ``interval`` later; a write made through a
backend of this process wakes its watchers at once), and the end of an
owner session (the re-check at that session's expiry removes its dead
entries, advancing the counter, which wakes every watcher of every
process). Callbacks run on the dispatcher thread, never on the poller's.
A watch of a queue entry that also waits on the entry's wake-up hint
(:mod:`.hints`) is polled at the slow end of the backoff, and a change of
its directory fires it only if that entry is gone or was written since the
watch began (one more statement, for all such watches at once).
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from moot.backends.base import CallbackWatch, Dispatcher
from moot.realthreads import threading

log = logging.getLogger("moot.backends.mysql")

#: The first pause between polls after a change or a new watch; it doubles
#: while nothing changes, up to the backend's ``poll_interval``.
FIRST_PAUSE = 0.002
#: Seconds past an owner session's expiry before its directory is re-checked.
MARGIN = 0.005
#: Seconds before a failed re-check is tried again.
RETRY_CHECK = 0.5
#: Directories per polling statement.
CHUNK = 500

Run = Callable[[str, Any], Sequence[Sequence[tuple[Any, ...]]]]

#: Pollers of this process, by database, for the fast path (see :func:`local_write`).
_LOCAL: dict[tuple[object, ...], weakref.WeakSet[Poller]] = {}
_LOCAL_LOCK = threading.Lock()


def _reset_in_child() -> None:
    """A forked child starts with no poller (the parent's are forgotten) and a
    fresh lock (a parent thread may have held it at the fork)."""
    global _LOCAL_LOCK
    _LOCAL_LOCK = threading.Lock()
    _LOCAL.clear()


os.register_at_fork(after_in_child=_reset_in_child)


def local_write(database: tuple[object, ...], directory: bytes, counter: int, before: int | None = None,
                removed: bytes | None = None) -> None:
    """A backend of this process wrote under ``directory`` (now at ``counter``):
    wake the watchers of every poller of this process on the same database at once.
    ``before`` and ``removed``: the counter just before the write, and the one
    key it removed, for a write that only removed that key (see :meth:`Poller.changed`)."""
    with _LOCAL_LOCK:
        pollers = list(_LOCAL.get(database, ()))
    for poller in pollers:
        poller.changed(directory, counter, before, removed)


class _Dir:
    __slots__ = ("check_at", "hinted", "n", "watches")

    def __init__(self, n: int) -> None:
        self.watches: set[CallbackWatch] = set()
        #: Watches of one entry also woken by its hint (see hints.py), with the entry's key and the
        #: directory's counter when the watch began: polled without haste, fired only if that entry changed.
        self.hinted: dict[CallbackWatch, tuple[bytes, int]] = {}
        self.n = n
        self.check_at: float | None = time.monotonic()  # re-check at once: find the owners' expiry


class Poller:
    """The watched directories of one backend and the thread that polls them.

    ``run(statement, args)`` runs one batch on the poller's own connection;
    ``counters`` and ``recheck`` are the statements (tables named)."""

    def __init__(self, database: tuple[object, ...], run: Run, counters: str, recheck: str,
                 dispatcher: Dispatcher, interval: float, entries: str = "", peek: str = ""):
        self._database = database
        self._run_sql = run
        self._counters = counters
        self._recheck = recheck
        self._entries = entries
        self._peek = peek
        self._dispatcher = dispatcher
        self._interval = interval
        self._pause = FIRST_PAUSE
        self._lock = threading.Lock()  # real, held for no I/O
        self._wake = threading.Event()
        self._dirs: dict[bytes, _Dir] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        with _LOCAL_LOCK:
            _LOCAL.setdefault(database, weakref.WeakSet()).add(self)

    # -- any thread ----------------------------------------------------------
    def knows(self, directory: bytes) -> bool:
        with self._lock:
            return directory in self._dirs

    def watch(self, directory: bytes, baseline: int | None, callback: Callable[[], None],
              hinted: bytes | None = None) -> CallbackWatch:
        """Fire ``callback`` after changes of ``directory`` past ``baseline``
        (its counter read by the caller; None if the directory is already polled).
        A watch of the entry ``hinted`` (its key) is also woken by a hint: a
        change of its directory does not bring the next polls closer, and
        fires it only if that entry is gone or has a version past the
        directory's counter when the watch began (every write of the
        directory takes its version from that counter) -- until
        :meth:`unhint`."""

        def forget(watch: CallbackWatch) -> None:
            with self._lock:
                found = self._dirs.get(directory)
                if found is not None:
                    found.watches.discard(watch)
                    found.hinted.pop(watch, None)
                    if not found.watches:
                        del self._dirs[directory]

        watch = CallbackWatch(callback, forget)
        with self._lock:
            if self._closed:
                raise RuntimeError("closed")
            found = self._dirs.get(directory)
            hasty = found is None or hinted is None  # a new directory is re-checked at once
            if found is None:
                found = self._dirs[directory] = _Dir(baseline or 0)
            found.watches.add(watch)
            if hinted is not None:
                found.hinted[watch] = (hinted, found.n)
            if hasty:
                self._pause = FIRST_PAUSE
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="moot-mysql-poller", daemon=True)
                self._thread.start()
        if hasty:
            self._wake.set()
        return watch

    def unhint(self, directory: bytes, watch: CallbackWatch) -> None:
        """``watch``'s hint cannot wake it: poll for it as for any other."""
        with self._lock:
            found = self._dirs.get(directory)
            if found is None or watch not in found.hinted:
                return
            del found.hinted[watch]
            self._pause = FIRST_PAUSE
        self._wake.set()

    def changed(self, directory: bytes, counter: int, before: int | None = None,
                removed: bytes | None = None) -> None:
        """``directory`` is at ``counter`` now: fire its watches if that is news.

        A write that only removed the key ``removed``, with the directory at
        ``before`` just before it, is known exactly when ``before`` is the
        counter this poller last saw (counters only grow: nothing else was
        written in between). Then a watch that waits on another entry's hint
        is not woken (that entry did not change: no herd of the waiters
        behind it), and the owners are not re-checked (a removal brings no
        owner's expiry closer). Any other write wakes every watch and has the
        directory re-checked."""
        with self._lock:
            found = self._dirs.get(directory)
            if found is None or counter <= found.n:
                return
            exact = before is not None and before == found.n and removed is not None
            found.n = counter
            if exact:
                watches = [w for w in found.watches if w not in found.hinted or found.hinted[w][0] == removed]
            else:
                found.check_at = time.monotonic()
                watches = list(found.watches)
            hasty = len(found.hinted) < len(found.watches)
            if hasty:
                self._pause = FIRST_PAUSE
        self._fire(watches)
        if hasty or not exact:
            self._wake.set()

    def close(self, timeout: float) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        with _LOCAL_LOCK:
            _LOCAL.get(self._database, weakref.WeakSet()).discard(self)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def forget(self) -> None:
        """In a forked child: the thread stayed in the parent; nothing is touched."""
        self._closed = True
        self._dirs = {}

    # -- the poller thread ---------------------------------------------------
    def _fire(self, watches: list[CallbackWatch]) -> None:
        for watch in watches:
            self._dispatcher.fire(watch)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                pause = self._pause
                checks = [c for d in self._dirs.values() if (c := d.check_at) is not None]
            now = time.monotonic()
            wait = min([pause, *(max(0.0, c - now) for c in checks)])
            if self._wake.wait(wait):
                self._wake.clear()
            try:
                self._poll()
                self._run_checks()
            except Exception as exc:  # the engine is away: try again later, watches stay
                log.debug("mysql poll failed: %s", exc)
                with self._lock:
                    self._pause = self._interval

    def _poll(self) -> None:
        with self._lock:
            dirs = list(self._dirs)
        fired: list[CallbackWatch] = []
        entries: dict[CallbackWatch, tuple[bytes, int]] = {}  # hinted watches of changed directories
        hasty = False  # a change seen where some watch has no hint: poll again soon
        for start in range(0, len(dirs), CHUNK):
            chunk = dirs[start:start + CHUNK]
            rows = self._run_sql(self._counters.format(marks=", ".join(["%s"] * len(chunk))), chunk)[-1]
            seen = {bytes(d): int(n) for d, n in rows}
            with self._lock:
                for directory in chunk:
                    found = self._dirs.get(directory)
                    counter = seen.get(directory, 0)
                    if found is not None and counter > found.n:
                        found.n = counter
                        found.check_at = time.monotonic()
                        fired += [w for w in found.watches if w not in found.hinted]
                        entries.update(found.hinted)
                        hasty = hasty or len(found.hinted) < len(found.watches)
        with self._lock:
            self._pause = FIRST_PAUSE if hasty else min(self._pause * 2, self._interval)
        self._fire(fired)
        if entries:
            self._fire(self._changed_entries(entries))

    def _changed_entries(self, watches: dict[CallbackWatch, tuple[bytes, int]]) -> list[CallbackWatch]:
        """The watches whose entry is gone, or was written after the watch began."""
        keys = sorted({key for key, _ in watches.values()})
        versions: dict[bytes, int] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            rows = self._run_sql(self._entries.format(marks=", ".join(["%s"] * len(chunk))), chunk)[-1]
            versions.update((bytes(k), int(v)) for k, v in rows)
        return [watch for watch, (key, since) in watches.items() if versions.get(key, since + 1) > since]

    def _run_checks(self) -> None:
        now = time.monotonic()
        retry = now + RETRY_CHECK  # if the re-check fails
        with self._lock:
            due = [d for d, found in self._dirs.items() if found.check_at is not None and found.check_at <= now]
            for directory in due:
                self._dirs[directory].check_at = retry
        for directory in due:
            peeked = self._run_sql(self._peek, {"dir": directory})[-1][0] if self._peek else (1, 0, 0)
            removed, left_us, counter = peeked
            if int(removed):  # dead entries to remove (or no peek): the write transaction
                removed, left_us, counter = self._run_sql(self._recheck, [directory])[-1][0]
            with self._lock:
                found = self._dirs.get(directory)
                if found is None:
                    continue
                at = None if left_us is None else time.monotonic() + max(0, int(left_us)) / 1e6 + MARGIN
                if found.check_at == retry:  # not asked again meanwhile
                    found.check_at = at
                elif at is not None and found.check_at is not None:
                    found.check_at = min(found.check_at, at)
                watches = list(found.watches) if int(removed) and counter is not None and int(counter) > found.n \
                    else []
                if watches:
                    found.n = int(counter)
            self._fire(watches)
