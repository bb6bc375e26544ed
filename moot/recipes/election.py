"""Leader election on the FIFO queue: candidates are served in arrival order;
the head of the queue leads. Leadership carries a fencing token like a lock.

A leader whose session ends loses leadership (``is_leader`` False, the
``on_change`` callbacks run) and the next candidate takes over within the
session TTL (at once on file://).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from moot import deadline as call_deadline
from moot import names
from moot.backends.base import Entry, Watch
from moot.realthreads import threading
from moot.recipes import queue
from moot.session import Session, check_timeout, within_timeout

log = logging.getLogger("moot.election")


class Election:
    """The election ``name``; see the module docstring."""

    def __init__(self, session: Session, name: str):
        self.name = names.check_name(name, "election name")
        self._session = session
        self._prefix = session.key("election", names.segment(self.name), "q") + "/"
        self._entry: Entry | None = None
        self._epoch = -1
        self._mutex = threading.Lock()
        self._callbacks: list[Callable[[str | None], None]] = []
        self._watch: Watch | None = None
        self._last_leader: str | None = None

    def __repr__(self) -> str:
        return f"<moot.Election {self.name!r}{' leading' if self.is_leader else ''}>"

    @property
    def is_leader(self) -> bool:
        """True while this coordinator leads and its session is trusted (no
        round trip; turns False on time, like ``Lock.is_held``)."""
        return self._entry is not None and self._session.holds(self._epoch)

    @property
    def token(self) -> int | None:
        """Fencing token of the current leadership, None when not leading."""
        return self._entry.seq if self._entry is not None else None

    def campaign(self, timeout: float | None = None) -> bool:
        """Stand for leadership and wait until elected: True once leading,
        False if ``timeout`` ran out (the candidacy is then withdrawn)."""
        deadline = check_timeout(timeout)
        if self._entry is not None:
            return True
        asked = time.monotonic()

        def install(entry: Entry, epoch: int) -> None:
            with self._mutex:
                self._entry, self._epoch = entry, epoch

        with call_deadline.bounded(deadline):
            entry = queue.wait_turn(self._session, self._prefix, queue.encode(self._session.member_id, "leader"),
                                    deadline, holder=self, install=install)
        if entry is None:
            self._session.metrics.count("timeouts", "election")
            return False
        self._session.metrics.timed("acquisitions", "wait_seconds", "election", time.monotonic() - asked)
        return True

    @within_timeout
    def leader(self) -> str | None:
        """The member id of the current leader, or None."""
        entries = queue.ordered(self._session.backend.list(self._prefix))
        return queue.decode(entries[0]).member if entries else None

    @within_timeout
    def candidates(self) -> list[str]:
        """Member ids of the leader and the waiting candidates, in order."""
        return [queue.decode(e).member for e in queue.ordered(self._session.backend.list(self._prefix))]

    @within_timeout
    def resign(self) -> bool:
        """Give up leadership; True if this coordinator was leading. Never raises
        for a leadership that is already gone."""
        with self._mutex:
            entry, self._entry = self._entry, None
        if entry is None:
            return False
        self._session.unbind(self)
        return self._session.delete_entry(entry.key)

    @within_timeout
    def on_change(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(leader_member_id_or_None)`` whenever the leader
        changes, on the coordinator's callback thread."""
        with self._mutex:
            self._callbacks.append(callback)
            if self._watch is None:
                self._last_leader = self.leader()
                self._watch = self._session.backend.watch(self._prefix,
                                                        lambda: self._session.run_callback(self._check_leader))

    def _check_leader(self) -> None:
        current = self.leader()
        with self._mutex:
            if current == self._last_leader:
                return
            self._last_leader = current
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(current)

    def stop_watching(self) -> None:
        """Stop the ``on_change`` callbacks."""
        with self._mutex:
            watch, self._watch = self._watch, None
            self._callbacks.clear()
        if watch is not None:
            watch.cancel()

    # -- session events ---------------------------------------------------
    def session_lost(self) -> None:
        with self._mutex:
            lost, self._entry = self._entry, None
        self._session.unbind(self)
        if lost is not None:
            self._session.metrics.count("lost", "election")
            log.warning("moot: leadership of election %r (token %s) lost with the session of %s", self.name,
                        lost.seq, self._session.member_id)
            self._session.run_callback(self._check_leader)

    def session_renewed(self) -> None:
        """Leadership lost with a session is not taken back silently."""

    def session_closing(self) -> None:
        self.stop_watching()
        self.resign()
