"""What every queue-based hold (lock, shared/exclusive lock, semaphore,
leadership) shares: the one acquire path (queue up, be served, be bound to
the session in one step), its queue entry and fencing token, its release, and
how it learns and reports that its session ended (``is_held`` False, a
warning, the ``lost`` counter, the ``on_lost`` callback on the coordinator's
callback thread). Subclasses only say how an entry is served (a blocker) and
what a hold is called.

One object, several callers
---------------------------
One hold object is one would-be holder, and it may be shared as a
``threading.Lock`` is (a module-level lock used by every thread):

* Another thread's ``acquire()`` *waits* (honouring ``blocking`` and
  ``timeout``) until the thread that took the object calls ``release()``,
  then queues up on the engine and is served in its turn. Threads waiting
  for one object are let in one at a time, in arrival order. The object is
  taken from the start of an ``acquire()`` until ``release()``: a hold lost
  with the session stays taken until its thread calls ``release()`` (as
  ``with`` does on leaving the block), so no other thread's hold begins
  while the first one may still be in its critical section.
* The thread that holds it calling ``acquire()`` again gets
  :class:`~moot.errors.LockError` (not reentrant: waiting would deadlock).
* asyncio tasks never wait for one another on one object: a task's
  ``acquire()`` while another task holds or is acquiring the same
  :mod:`moot.aio` object raises LockError saying so (give each task its own
  object; objects with one name exclude each other).
* ``release()`` may come from any thread, as ``threading.Lock.release()``.
* A leadership (:class:`~moot.recipes.election.Election`) belongs to the
  object, not to the thread that campaigned: another thread's
  ``campaign()`` waits only while a campaign is in progress, and returns
  True at once if the object leads."""

from __future__ import annotations

import collections
import dataclasses
import logging
import sys
import threading as user_threading  # the caller's threads: green ones under eventlet
import time
from collections.abc import Callable
from typing import Any, ClassVar

from moot import waits
from moot.backends.base import Entry
from moot.errors import LockError
from moot.realthreads import threading
from moot.recipes import queue
from moot.session import Session, check_timeout


@dataclasses.dataclass(frozen=True)
class Held:
    """One acquisition: what ``with coord.lock(name) as held:`` and a
    successful ``election.campaign()`` give. Its ``token`` is an int (the
    fencing token of this acquisition, kept after it ends); ``is_held``
    says whether it is still held (no round trip)."""

    name: str
    token: int
    since: float
    hold: Hold = dataclasses.field(repr=False, compare=False)

    @property
    def is_held(self) -> bool:
        return self.hold.is_held and self.hold.token == self.token

    def release(self) -> bool:
        """Release this acquisition; True if it was still held (never raises
        for one that is gone, like :meth:`Hold.release`)."""
        if self.hold.token != self.token:
            return False
        return self.hold.release()


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
        # The queue's directory, then the name's (``<kind>/<name>/q/``): this
        # layout's alone, never keys; handed to Backend.sweep on release.
        self._directories = (prefix, prefix[:prefix.rstrip("/").rfind("/") + 1])
        self._timeout = timeout
        self._on_lost = on_lost
        self._entry: Entry | None = None
        self._last: tuple[int, float] | None = None  # the latest acquisition's (token, since), kept after it ends
        self._last_held: Held | None = None  # the Held of _last, made when first asked for
        self._epoch = -1  # the coordinator's session epoch the hold was served in
        self._mutex = threading.Lock()
        self.since: float | None = None
        self._held_at = 0.0
        # Who has taken the object (a thread id or an asyncio task; see the
        # module docstring), whether its acquire() is still running, and the
        # threads waiting to take it, in order (all under _mutex).
        self._user: object | None = None
        self._acquiring = False
        self._asked = ""  # the mode the running acquire queued in
        self._waiting: collections.deque[tuple[object, waits.Wake]] = collections.deque()
        self._acquired = session.metrics.timer("acquisitions", "wait_seconds", self.kind)
        self._released = session.metrics.timer("releases", "hold_seconds", self.kind)

    @property
    def token(self) -> int | None:
        """Fencing token of the current hold (None when not held)."""
        entry = self._entry
        return entry.seq if entry is not None else None

    def held(self) -> Held:
        """The latest acquisition (its token an int), e.g. right after a
        successful ``acquire()``; LockError if this object never acquired."""
        last = self._last
        if last is None:
            raise LockError(f"{self.kind} {self.name!r} was never acquired by this object")
        held = self._last_held
        if held is None or held.token != last[0] or held.since != last[1]:
            held = self._last_held = Held(self.name, last[0], last[1], self)
        return held

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
        deadline = check_timeout(self._timeout if timeout is None else timeout)
        who, is_task = _caller()
        steps = self._acquire_steps(who, is_task, mode, blocking, deadline, blocker)
        return waits.drive(steps, deadline if self._session.reads_deadline else None)

    def _acquire_plan(self, mode: str, blocking: bool, timeout: float | None,
                      blocker: queue.Blocker) -> waits.Plan[bool]:
        """:meth:`_acquire` as a plan (:mod:`moot.waits`), for either API; an
        acquisition nobody will see is released. Made by the caller (a
        thread, or a task on its event loop), who is recorded as the user of
        the object (see the module docstring)."""
        deadline = check_timeout(self._timeout if timeout is None else timeout)
        who, is_task = _caller()
        return waits.Plan(self._acquire_steps(who, is_task, mode, blocking, deadline, blocker), deadline,
                          self._undo)

    def _undo(self, held: bool) -> None:
        if held:
            self.release()

    def _acquire_steps(self, who: object, is_task: bool, mode: str, blocking: bool, deadline: float | None,
                       blocker: queue.Blocker) -> waits.Steps[bool]:
        self._session.check_open()
        asked = time.monotonic()
        with self._mutex:
            taken = self._take_now(who, is_task)
        if not taken and not (yield from self._take(who, is_task, blocking, deadline)):
            if blocking:
                self._session.metrics.count("timeouts", self.kind)
            return False
        served = False
        try:
            if self._entry is not None:  # a leadership taken by another thread (see _take)
                served = True
                return True
            self._asked = mode  # for _install: this caller has the object until it is served or gives up
            entry = yield from queue.wait_turn(self._session, self._prefix,
                                               queue.encode(self._session.member_id, mode),
                                               deadline, blocker, blocking, holder=self, install=self._install)
            served = entry is not None
        finally:
            if not served or not self._caller_owned:  # else _install ended the acquiring, under the same mutex
                with self._mutex:
                    self._acquiring = False
                    if self._user is who:
                        self._pass_on()
        if not served:
            if blocking:
                self._session.metrics.count("timeouts", self.kind)
            return False
        self._acquired(self._held_at - asked)
        return True

    def _install(self, entry: Entry, epoch: int) -> None:
        """Put the served ``entry`` (queued in mode ``_asked``) in place (see
        :func:`moot.recipes.queue.wait_turn`)."""
        with self._mutex:
            self._entry, self._epoch, self._acquiring = entry, epoch, False
            self.since = since = time.time()
            self._held_at = time.monotonic()
            self._last = (entry.seq or 0, since)
            self._installed(self._asked)

    def _take_now(self, who: object, is_task: bool) -> bool:
        """Under the mutex: take the object for ``who`` if nobody else has it
        (True); False if another caller has it; LockError for a reentry, or
        for a task while another caller has it."""
        user = self._user
        if user is None or user is who or user == who:
            if user is not None and (self._acquiring or self._entry is not None) and self._caller_owned:
                raise LockError(self._reentry_error(is_task))
            self._user, self._acquiring = who, True
            return True
        if is_task:
            raise LockError(self._shared_task_error())
        return False

    def _take(self, who: object, is_task: bool, blocking: bool, deadline: float | None) -> waits.Steps[bool]:
        """Steps that take the object for ``who`` (see the module docstring):
        True once taken, False if ``blocking`` is False or ``deadline``
        passed while another thread had it; LockError for a reentry, or for
        a task while another caller has it."""
        wake: waits.Wake | None = None
        taken = False
        try:
            while True:
                with self._mutex:
                    if self._take_now(who, is_task):
                        taken = True
                        return True
                    if not blocking:
                        return False
                    if wake is None:
                        wake = waits.Wake()
                        self._waiting.append((who, wake))
                    wake.clear()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # In slices, to notice close(): a thread that lost its hold
                # is no longer bound to the session, and may never release.
                yield waits.Wait(wake, 1.0 if remaining is None else min(remaining, 1.0))
                self._session.check_open()
        finally:
            if wake is not None:
                with self._mutex:
                    if (who, wake) in self._waiting:
                        self._waiting.remove((who, wake))
                    elif not taken and self._user is who and not self._acquiring:
                        self._pass_on()  # handed over just as this wait ended: pass it on

    def _pass_on(self) -> None:
        """Under the mutex: the object is free; hand it to the first waiting
        thread (which then finds itself the user), or leave it free."""
        if self._waiting:
            user, wake = self._waiting.popleft()
            self._user = user
            wake.set()
        else:
            self._user = None

    def _reentry_error(self, is_task: bool) -> str:
        doing = "held" if self._entry is not None else "being acquired"
        by = "this task" if is_task else "this thread"
        return (f"{self.kind} {self.name!r} is already {doing} by {by} through this object (not reentrant"
                f"{self._reentry_hint}); release() it first")

    def _shared_task_error(self) -> str:
        doing = "held" if self._entry is not None else "being acquired"
        return (f"{self.kind} {self.name!r} is already {doing} through this object by another asyncio task "
                f"(or by this one: not reentrant{self._reentry_hint}); one moot.aio object is one holder "
                "and tasks do not wait for each other on it: give each task its own object (objects with "
                "the same name exclude each other), or release() it first")

    #: True if the hold belongs to the caller that took it until its
    #: release(); False for a leadership, which belongs to the object.
    _caller_owned = True

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
        try:
            if entry is None:
                return False
            self._session.unbind(self)
            self._released(time.monotonic() - self._held_at)
            with self._session.bounded():
                deleted = self._session.delete_entry(entry.key)  # seq-named: never made again, no version needed
            self._session.backend.sweep(self._directories)
            return deleted
        finally:
            with self._mutex:
                if self._user is not None and not self._acquiring:
                    self._pass_on()  # the next thread waiting for this object goes on

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


def _caller() -> tuple[object, bool]:
    """Who calls: the running asyncio task (True), else the calling thread's
    id (False; a green thread's own id under eventlet)."""
    aio = sys.modules.get("asyncio")  # no asyncio imported: no task can be running
    if aio is not None:
        loop = aio._get_running_loop()  # None outside a loop (current_task() would raise, which costs)
        if loop is not None:
            task = aio.current_task(loop)
            if task is not None:
                return task, True
    return user_threading.get_ident(), False
