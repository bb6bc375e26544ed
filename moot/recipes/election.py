"""Leader election on the FIFO queue: candidates are served in arrival order;
the head of the queue leads. Leadership carries a fencing token like a lock.

A leader whose session ends loses leadership (``is_leader`` False, the
``on_change`` callbacks run) and the next candidate takes over within the
session TTL (at once on file://).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Literal

from moot import names, waits
from moot.backends.base import Entry, Watch
from moot.recipes import queue
from moot.recipes.hold import Held, Hold
from moot.session import Session, check_timeout, within_timeout

log = logging.getLogger("moot.election")

#: The mode of a candidate's queue entry.
LEADER = "leader"


def _already(result: bool) -> waits.Steps[bool]:
    """Steps that wait for nothing."""
    return result
    yield  # a generator


class Election(Hold):
    """The election ``name``; see the module docstring. A leadership is a
    hold of the election's queue: served at its head, fenced, bound to the
    session like a lock."""

    kind = "election"
    _caller_owned = False  # a leadership belongs to the object, not to the thread that took it

    def __init__(self, session: Session, name: str, on_lost: Callable[[Election], None] | None = None):
        name = names.check_name(name, "election name")
        super().__init__(session, name, session.key("election", names.segment(name), "q") + "/", None, on_lost)
        self._callbacks: list[Callable[[str | None], None]] = []
        self._watch: Watch | None = None
        self._last_leader: str | None = None

    def __repr__(self) -> str:
        return f"<moot.Election {self.name!r}{' leading' if self.is_leader else ''}>"

    @property
    def is_leader(self) -> bool:
        """True while this coordinator leads and its session is trusted (no
        round trip; turns False on time, like ``Lock.is_held``)."""
        return self.is_held

    def campaign(self, timeout: float | None = None, blocking: bool = True) -> Held | Literal[False]:
        """Stand for leadership and wait until elected: the leadership once
        leading (a true :class:`~moot.recipes.hold.Held` whose ``token`` is
        an int; at once if already leading), False if ``timeout`` ran out,
        or at once with ``blocking=False`` if another candidate is ahead
        (the candidacy is then withdrawn)."""
        return self.held() if waits.run(self.campaign_plan(timeout, blocking)) else False

    def campaign_plan(self, timeout: float | None = None, blocking: bool = True) -> waits.Plan[bool]:
        """:meth:`campaign` as a plan (:mod:`moot.waits`) for :mod:`moot.aio`."""
        if self._entry is not None:
            return waits.Plan(_already(True), check_timeout(timeout))
        return self._acquire_plan(LEADER, blocking, timeout, queue.predecessor)

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
        return self.release()

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

    def stop_watching(self, callback: Callable[[str | None], None] | None = None) -> None:
        """Stop the ``on_change`` callbacks (only ``callback``, if given)."""
        with self._mutex:
            if callback is not None:
                with contextlib.suppress(ValueError):
                    self._callbacks.remove(callback)
                if self._callbacks:
                    return
            watch, self._watch = self._watch, None
            self._callbacks.clear()
        if watch is not None:
            watch.cancel()

    # -- session events (SessionListener) ---------------------------------
    def _report_lost(self, lost: Entry) -> None:
        log.warning("moot: leadership of election %r (token %s) lost with the session of %s", self.name,
                    lost.seq, self._session.member_id)
        self._session.run_callback(self._check_leader)
        if self._on_lost is not None:
            callback = self._on_lost
            self._session.run_callback(lambda: callback(self))

    def session_closing(self) -> None:
        self.stop_watching()
        self.release()
