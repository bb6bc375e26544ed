"""When to remove the parent znodes a released lock leaves behind.

A lock (semaphore, election) used for the first time makes two parent
znodes, its name and its queue, and ZooKeeper keeps them for ever: a
service that locks per object (a volume, an instance) would leave two
znodes per object it ever locked, and every listing of all locks would read
them. On release the recipe names those directories (``Backend.sweep``);
this schedule hands each to the backend's removal a while after the last
release in it, on a thread of its own, never on the caller's path.

Why a delay, and why this is safe, is in docs/design/zookeeper.md
("Parents that go"): a directory is removed only if it is empty (the server
refuses otherwise) and unchanged (at the version read; at close, that of a
mere parent never changed); a creation that finds it gone makes it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from moot.realthreads import threading

log = logging.getLogger("moot.backends.zookeeper")

#: Seconds after the last release in a directory before it is removed: a name
#: used again within this never pays for its parents again.
SWEEP_AFTER = 10.0
#: Directories not removed yet that the backend's close() still removes (the most recent).
AT_CLOSE = 1_000
#: Directories removed together (one pipelined read, then one pipelined removal).
BATCH = 128
#: Directories remembered at most; beyond, the oldest are left in place.
MAX_PENDING = 50_000

#: Znode paths of one release's directories, deepest first.
Paths = tuple[str, ...]


class Sweeper:
    """Remembers released directories and calls ``remove(batch)`` with those
    due, from one daemon thread started at the first release."""

    def __init__(self, remove: Callable[[list[Paths]], None]):
        self._remove = remove
        self._delay = SWEEP_AFTER
        self._changed = threading.Condition()
        self._due: dict[Paths, float] = {}  # in the order they fall due: a repeat moves to the end
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def stopped(cls) -> Sweeper:
        """One that removes nothing (a forked child's)."""
        sweeper = cls(lambda batch: None)
        sweeper.close()
        return sweeper

    def add(self, paths: Paths) -> None:
        with self._changed:
            if self._closed:
                return
            self._due.pop(paths, None)
            self._due[paths] = time.monotonic() + self._delay
            while len(self._due) > MAX_PENDING:
                del self._due[next(iter(self._due))]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="moot-zookeeper-sweep", daemon=True)
                self._thread.start()
            elif len(self._due) == 1:
                self._changed.notify()

    def close(self) -> list[Paths]:
        """Stop; return those not removed yet, the most recent last."""
        with self._changed:
            self._closed = True
            left, self._due = list(self._due), {}
            self._changed.notify()
        return left

    def _run(self) -> None:
        while True:
            with self._changed:
                batch = self._next_batch()
                if batch is None:
                    return
            try:
                self._remove(batch)
            except Exception:  # the engine unreachable, the backend closed: they stay; harmless
                log.debug("removing %d released directories failed", len(batch), exc_info=True)

    def _next_batch(self) -> list[Paths] | None:
        """Wait (holding the condition) until some are due; None once closed."""
        while not self._closed:
            if not self._due:
                self._changed.wait()
                continue
            wait = next(iter(self._due.values())) - time.monotonic()
            if wait > 0:
                self._changed.wait(wait)
                continue
            now = time.monotonic()
            batch: list[Paths] = []
            for paths, due in self._due.items():
                if due > now or len(batch) == BATCH:
                    break
                batch.append(paths)
            for paths in batch:
                del self._due[paths]
            return batch
        return None
