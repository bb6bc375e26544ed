"""What every queue-based hold (lock, shared/exclusive lock, semaphore,
leadership) shares: the one acquire path (queue up, be served, be bound to
the session in one step), its queue entry and fencing token, its release, and
how it learns and reports that its session ended (``is_held`` False, a
warning, the ``lost`` counter, the ``on_lost`` callback on the coordinator's
callback thread). Subclasses only say how an entry is served (a blocker) and
what a hold is called."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from moot import waits
from moot.backends.base import Entry
from moot.errors import LockError
from moot.realthreads import threading
from moot.recipes import queue
from moot.session import Session, check_timeout


class Hold:
    """Base of one would-be holder of a queue-based lock named ``name``."""

    #: The recipe's name in metrics labels, logger names and messages.
    kind: ClassVar[str]

    def __init__(self, session: Session, name: str, prefix: str, timeout: float | None,
                 on_lost: Callable[[Any], None] | None):
        check_timeout(timeout)
        self.name = name
        self._session = session
        self._prefix = prefix
        self._timeout = timeout
        self._on_lost = on_lost
        self._entry: Entry | None = None
        self._epoch = -1  # the coordinator's session epoch the hold was served in
        self._mutex = threading.Lock()
        self.since: float | None = None
        self._held_at = 0.0

    @property
    def token(self) -> int | None:
        """Fencing token of the current hold (None when not held)."""
        entry = self._entry
        return entry.seq if entry is not None else None

    @property
    def is_held(self) -> bool:
        """True while this object holds it and its session is trusted (no
        round trip): False from the instant the session is past its validity
        (renewal sent + granted TTL - safety margin), even before the loss is
        reported, so it turns False before the engine can give the lock to
        anyone else."""
        return self._entry is not None and self._session.holds(self._epoch)

    def _acquire(self, mode: str, blocking: bool, timeout: float | None, blocker: queue.Blocker) -> bool:
        """The one acquire path: queue up in ``mode`` and wait (until
        ``timeout``, default the object's) to be served by ``blocker``; the
        hold is installed and bound to the session in one step (see
        :func:`moot.recipes.queue.wait_turn`). LockError if already held."""
        return waits.run(self._acquire_plan(mode, blocking, timeout, blocker))

    def _acquire_plan(self, mode: str, blocking: bool, timeout: float | None,
                      blocker: queue.Blocker) -> waits.Plan[bool]:
        """:meth:`_acquire` as a plan (:mod:`moot.waits`), for either API; an
        acquisition nobody will see is released."""
        deadline = check_timeout(self._timeout if timeout is None else timeout)
        return waits.Plan(self._acquire_steps(mode, blocking, deadline, blocker), deadline,
                          lambda held: self.release() if held else None)

    def _acquire_steps(self, mode: str, blocking: bool, deadline: float | None,
                       blocker: queue.Blocker) -> waits.Steps[bool]:
        self._session.check_open()
        if self._entry is not None:
            raise LockError(f"{self.kind} {self.name!r} is already held by this object (not reentrant"
                            f"{self._reentry_hint})")
        asked = time.monotonic()

        def install(entry: Entry, epoch: int) -> None:
            with self._mutex:
                self._entry, self._epoch = entry, epoch
                self.since = time.time()
                self._held_at = time.monotonic()
                self._installed(mode)

        entry = yield from queue.wait_turn(self._session, self._prefix, queue.encode(self._session.member_id, mode),
                                           deadline, blocker, blocking, holder=self, install=install)
        if entry is None:
            if blocking:
                self._session.metrics.count("timeouts", self.kind)
            return False
        self._session.metrics.timed("acquisitions", "wait_seconds", self.kind, self._held_at - asked)
        return True

    #: Appended to the "not reentrant" error (e.g. how to go from shared to exclusive).
    _reentry_hint = ""

    def _installed(self, mode: str) -> None:
        """Subclass hook, under the mutex, when a hold is installed."""

    def release(self) -> bool:
        """Release the hold; True if it was held.

        Never raises for a hold that is not held or whose session is gone;
        raises ConnectionLost if the backend cannot be reached (the heartbeat
        then deletes the entry as soon as the backend answers again, or the
        session ends: either way the hold is freed)."""
        entry = self._forget()
        if entry is None:
            return False
        self._session.unbind(self)
        self._session.metrics.timed("releases", "hold_seconds", self.kind, time.monotonic() - self._held_at)
        with self._session.bounded():
            return self._session.delete_entry(entry.key)  # seq-named: never made again, no version needed

    def _forget(self) -> Entry | None:
        """Drop the local state of the hold; return the entry it had."""
        with self._mutex:
            lost, self._entry = self._entry, None
            self.since = None
        return lost

    # -- session events (SessionListener) -----------------------------------
    def session_lost(self) -> None:
        lost = self._forget()
        self._session.unbind(self)
        if lost is None:
            return
        self._session.metrics.count("lost", self.kind)
        self._report_lost(lost)

    def _report_lost(self, lost: Entry) -> None:
        """Tell the application (a warning, then ``on_lost`` on the callback thread)."""
        logging.getLogger(f"moot.{self.kind}").warning(
            "moot: %s %r (token %s) lost with the session of %s", self.kind, self.name, lost.seq,
            self._session.member_id)
        if self._on_lost is not None:
            callback = self._on_lost
            self._session.run_callback(lambda: callback(self))

    def session_renewed(self) -> None:
        """A lost hold is never taken again behind the user's back."""

    def session_closing(self) -> None:
        self.release()
