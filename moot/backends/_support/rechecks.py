"""Re-checks at owner expiry and the own-session check, for the one thread
that owns a backend's notice connection.

An engine's change notices say when a watched entry's owner session will
expire, but nothing is sent when it does (no one deletes the entry). The
listener thread keeps here, per watched target, the earliest time its
entries must be re-checked, and runs the re-check then: the backend's
``recheck(target)`` reaps the expired owners there (so their deletion is
noticed like any other change) and returns the milliseconds until the next
foreign owner there expires (-1: none). The same thread checks, at the
deadline it was given, that the own session is still alive.

Guarantees:

* A target is re-checked no earlier than the time asked, and at the
  earliest time asked: :meth:`Rechecks.sooner` never postpones a re-check,
  :meth:`Rechecks.at` sets it outright (None: none). Only the latest time
  set for a target counts; a target no longer ``current`` is dropped.
* After a re-check, the next one comes ``MARGIN`` s past the expiry it
  reported; one that fails (the engine's BackendError or CoordinatorClosed,
  or anything else, logged) is tried again ``RETRY`` s later. A time asked
  meanwhile that is sooner wins.
* At the own session's deadline, ``session_left(id)`` is asked (seconds
  left, None if the session is gone; an engine error counts as ``RETRY``
  seconds left): the next check comes ``MARGIN`` s past what is left, and a
  gone session is told to ``gone(id)`` once, unless the session was changed
  meanwhile.
* No I/O under the lock. The owner's ``lock`` must be held for every method
  but :meth:`Rechecks.run` (which takes it itself, and calls the engine
  without it) and :meth:`Rechecks.watch_session` (which takes it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from moot.backends._support.loop import Timers
from moot.errors import BackendError, CoordinatorClosed

#: Seconds past an owner session's expiry before its entries are re-checked.
MARGIN = 0.005
#: Seconds before a failed re-check (or own-session check) is tried again.
RETRY = 0.5


class Target(Protocol):
    """Something a listener re-checks: it carries its current re-check time."""

    check_at: float | None


T = TypeVar("T", bound=Target)


class Rechecks(Generic[T]):
    """The re-check times of a listener's targets and of its own session.

    ``recheck(target)`` runs a re-check (ms until the next foreign owner
    there expires, -1 if none); ``current(target)`` (lock held) says whether
    the target is still watched; ``session_left`` and ``gone`` are the
    own-session check and what is told when it ended; ``log`` and ``what``
    (e.g. "redis") name the failures logged."""

    def __init__(self, lock: Any, recheck: Callable[[T], int], current: Callable[[T], bool],
                 session_left: Callable[[str], float | None], gone: Callable[[str], None],
                 log: logging.Logger, what: str):
        self._lock = lock
        self._recheck = recheck
        self._current = current
        self._session_left = session_left
        self._gone = gone
        self._log = log
        self._what = what
        self._checks: Timers[T] = Timers()  # one is current while target.check_at == its time
        self._session: tuple[str, float] | None = None  # own session id, when to check it is alive

    # -- lock held ------------------------------------------------------------
    def at(self, target: T, when: float | None) -> None:
        """Re-check ``target`` at ``when`` (monotonic; None: not at all)."""
        target.check_at = when
        if when is not None:
            self._checks.push(when, target)

    def sooner(self, target: T, when: float) -> None:
        """Re-check ``target`` at ``when`` unless it is due sooner already."""
        if target.check_at is None or when < target.check_at:
            self.at(target, when)

    def clear(self, targets: Iterable[T]) -> None:
        """Forget every re-check time (``targets``: all the owner's targets)."""
        for target in targets:
            target.check_at = None
        self._checks.clear()

    def own(self) -> str | None:
        """The own session's id, None while there is none to check."""
        return self._session[0] if self._session is not None else None

    def next_due(self) -> float | None:
        """When :meth:`run` has something to do next, None if never."""
        first = self._checks.first()
        if self._session is None:
            return first
        return self._session[1] if first is None else min(first, self._session[1])

    # -- takes the lock -------------------------------------------------------
    def watch_session(self, session_id: str | None, deadline: float | None) -> None:
        """Check at ``deadline`` (monotonic) that session ``session_id`` still exists."""
        with self._lock:
            self._session = None if session_id is None or deadline is None else (session_id, deadline)

    def check_session_now(self, session_id: str) -> None:
        """Make the own-session check due now, if ``session_id`` is still the
        own session: for a notice that it ended, which anyone allowed to
        publish on the channel could have forged, so the server is asked."""
        with self._lock:
            if self._session is not None and self._session[0] == session_id:
                self._session = (session_id, time.monotonic())

    def run(self) -> None:
        """Run the re-checks due now, then the own-session check if due."""
        now = time.monotonic()
        due: list[T] = []
        with self._lock:
            for when, target in self._checks.pop_due(now):
                if target.check_at == when and self._current(target):
                    target.check_at = None
                    due.append(target)
            session = self._session if self._session is not None and self._session[1] <= now else None
        for target in due:
            at: float | None = time.monotonic() + RETRY
            try:
                ms = self._recheck(target)
            except (BackendError, CoordinatorClosed):
                pass
            except Exception:
                self._log.exception("%s watch re-check failed", self._what)
            else:
                at = None if ms < 0 else time.monotonic() + ms / 1000 + MARGIN
            with self._lock:
                if target.check_at is None or (at is not None and at < target.check_at):
                    self.at(target, at)
        if session is not None:
            self._check_session(session[0])

    def _check_session(self, session_id: str) -> None:
        try:
            left = self._session_left(session_id)
        except (BackendError, CoordinatorClosed):
            left = RETRY
        with self._lock:
            if self._session is None or self._session[0] != session_id:
                return
            self._session = None if left is None else (session_id, time.monotonic() + left + MARGIN)
        if left is None:
            self._gone(session_id)
