"""Shared/exclusive locks with upgrade, on the same FIFO queue as plain locks.

``coord.rwlock(name)`` and ``coord.lock(name)`` share one queue per name: a
plain lock is an exclusive entry, so ``rwlock(n).read()`` and ``lock(n)``
exclude each other, and ``coord.lock_info(n)`` shows every holder with its
mode. Guarantees, on every backend:

* Any number of shared holders, or exactly one exclusive holder.
* FIFO: a reader waits for the nearest writer ahead of it (readers that
  arrive after a writer wait behind it, so a stream of readers cannot starve
  a writer); a writer waits for its predecessor. A release wakes only the
  waiters it admits: the next writer, or the readers right behind it.
* Fencing: tokens of exclusive holds strictly increase; a shared hold's token
  is greater than the token of every exclusive hold before it.
* ``upgrade()`` turns a shared hold into an exclusive one without letting
  go: it waits for the other holders to leave while no new reader gets in.
  Of two holders that upgrade at once, one wins and the other gets
  :class:`UpgradeConflict` at once; neither deadlocks.
* Session loss: ``is_held`` turns False and ``on_lost`` runs; ``release()``
  never raises for a lock that is not held or already gone.

How an upgrade works, and why it is safe (rules as in :mod:`moot.recipes.lock`)
-------------------------------------------------------------------------------
The upgrader, holding shared entry H, enqueues an *upgrade marker* U (a new
sequential entry recording H's key, so U is behind every live entry). The
*region* of U is the entries strictly between H and U.

1. Conflict. If the queue as read by U's own enqueue holds another marker
   ahead of U whose owner is still queued, the upgrade fails at once with
   UpgradeConflict (U is withdrawn; the shared hold is kept). Of two markers
   made concurrently, the later one always sees the earlier (its listing
   follows its creation, which follows the earlier creation), and the earlier
   never counts the later (it is not ahead): exactly one upgrader goes on.
2. Shutting the door. Readers that arrive after U see a marker ahead of them
   and wait. Writers are unaffected: a writer in the region waits for its
   predecessor, so never gets in while H is queued.
3. Waiting. U is granted when H is the head (every earlier holder left: they
   are all shared holders, since H was served) and no reader of the region is
   *admissible* (a shared entry with nothing but shared entries between H and
   it). Admissible readers hold or are about to, and never wait for H or U,
   so the upgrader waits for them one at a time; it never waits for a writer.
4. The race with late admissions. A region reader behind a writer becomes
   admissible when that writer leaves (timeout); it must not get in once U is
   granted. So a region reader that finds itself admissible first
   *registers* with U (compare-and-set of U at the version it read), and the
   upgrader grants by compare-and-set of U to ``granted`` at the version it
   read. Those two writes of one key are ordered: if the reader's came first
   the grant fails and the upgrader reads again and waits for that reader;
   if the grant came first the registration fails and the reader, reading
   again, sees U granted and waits for U. (When the region is empty no
   reader can ever enter it, so the grant needs no write.)
5. No deadlock. The upgrader waits only for holders or admissible readers,
   who wait for nobody; a second upgrader fails at once (1); readers and
   writers waiting behind H or U wait for entries ahead of them, as always.

Once granted, H is the head and the only holder: exclusive. Its token stays
H's seq, which is greater than every earlier exclusive token (those entries
were ahead of H, or older than it) and smaller than every later one (every
later exclusive hold waits for H to leave the queue). ``release()`` deletes H
(the hold ends), then U (readers behind it go in).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence

from moot import names, waits
from moot.backends.base import Entry
from moot.errors import LockError, LockTimeout, SessionExpired, UpgradeConflict
from moot.recipes import lock, queue
from moot.recipes.hold import Hold
from moot.recipes.lock import EXCLUSIVE, MARKER, SHARED
from moot.session import Session, check_timeout


class _HoldEnded(Exception):
    """The upgrading shared entry left the queue (session ended)."""


class RWLock(Hold):
    """A shared/exclusive lock named ``name``; see the module docstring.

    One ``RWLock`` object is one would-be holder (shared or exclusive), not
    reentrant; two objects with the same name are two holders, even in one
    process.
    """

    kind = "rwlock"

    def __init__(self, session: Session, name: str, timeout: float | None = None,
                 on_lost: Callable[[RWLock], None] | None = None):
        name = names.check_name(name, "lock name")
        super().__init__(session, name, lock.lock_prefix(session, name), timeout, on_lost)
        self._marker: Entry | None = None
        self._mode: str | None = None

    def __repr__(self) -> str:
        state = f"held {self._mode} token={self.token}" if self.is_held else "not held"
        return f"<moot.RWLock {self.name!r} {state}>"

    @property
    def mode(self) -> str | None:
        """``"shared"``, ``"exclusive"``, or None when not held."""
        return self._mode

    # -- acquire / release --------------------------------------------------
    def acquire_read(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a shared hold; True once held, False if not (non-blocking, or
        timeout ran out). ``timeout`` defaults to the one given to
        ``coord.rwlock()``. Raises LockError if this object already holds it."""
        return waits.run(self.read_plan(blocking, timeout))

    def acquire_write(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take an exclusive hold; like :meth:`acquire_read` otherwise."""
        return waits.run(self.write_plan(blocking, timeout))

    def read_plan(self, blocking: bool = True, timeout: float | None = None) -> waits.Plan[bool]:
        """:meth:`acquire_read` as a plan (:mod:`moot.waits`) for :mod:`moot.aio`."""
        return self._acquire_plan(SHARED, blocking, timeout, self._reader_blocker)

    def write_plan(self, blocking: bool = True, timeout: float | None = None) -> waits.Plan[bool]:
        """:meth:`acquire_write` as a plan (:mod:`moot.waits`) for :mod:`moot.aio`."""
        return self._acquire_plan(EXCLUSIVE, blocking, timeout, queue.predecessor)

    _reentry_hint = "; use upgrade() to go from shared to exclusive"

    def _installed(self, mode: str) -> None:
        self._mode = mode

    def _reader_blocker(self, mine: Entry, entries: list[Entry]) -> Sequence[Entry] | queue.Signal | None:
        """Served per the rules of moot.recipes.lock, after registering with
        every pending upgrade whose region holds me (see step 4 above)."""
        queue_slots = lock.slots(entries)
        index = next(i for i, slot in enumerate(queue_slots) if slot.entry.key == mine.key)
        blocker, pending = lock.reader_state(index, queue_slots)
        if blocker is not None:
            return (blocker.entry,)
        for marker in pending:
            fields = queue.data(marker.entry)
            fields["admitted"] = int(fields.get("admitted", 0)) + 1
            if self._session.backend.compare_and_set(marker.entry.key, json.dumps(fields).encode(),
                                                   marker.entry.version) is None:
                return queue.RETRY
        return None

    def release(self) -> bool:
        """Release the hold (shared or exclusive), and an upgrade in progress;
        True if it was held. Raises only ConnectionLost, as Hold.release."""
        marker = self._marker
        try:
            return super().release()
        finally:
            if marker is not None:
                queue.leave(self._session, marker)

    # -- upgrade ------------------------------------------------------------
    def upgrade(self, timeout: float | None = None) -> bool:
        """Turn this object's shared hold into an exclusive one, keeping the
        shared hold meanwhile; see the module docstring.

        True once exclusive (at once if already exclusive); False if
        ``timeout`` (default: the one given to ``coord.rwlock()``) ran out,
        still holding shared. Raises UpgradeConflict at once if another holder
        is upgrading (the shared hold is kept), LockError if not held, and
        SessionExpired if the hold is lost with the session meanwhile."""
        return waits.run(self.upgrade_plan(timeout))

    def upgrade_plan(self, timeout: float | None = None) -> waits.Plan[bool]:
        """:meth:`upgrade` as a plan (:mod:`moot.waits`) for :mod:`moot.aio`.
        An upgrade served after its caller was cancelled stays exclusive
        (``mode`` says so): a hold is never given up behind the holder's back."""
        deadline = check_timeout(self._timeout if timeout is None else timeout)
        return waits.Plan(self._upgrade_steps(deadline), deadline)

    def _upgrade_steps(self, deadline: float | None) -> waits.Steps[bool]:
        """:meth:`upgrade` as steps (:mod:`moot.waits`), for either API."""
        self._session.check_open()
        with self._mutex:
            owner, mode = self._entry, self._mode
        if owner is None:
            raise LockError(f"rwlock {self.name!r} is not held by this RWLock object: nothing to upgrade")
        if mode == EXCLUSIVE:
            return True
        value = queue.encode(self._session.member_id, MARKER, owner=owner.key, granted=False)
        marker, entries = self._session.enqueue(self._prefix, value)
        try:
            outcome = yield from queue.wait_served(self._session, self._prefix, marker, entries, deadline,
                                                   self._upgrade_blocker(owner))
        except _HoldEnded:
            outcome = queue.Outcome.GONE
        except BaseException:
            queue.leave(self._session, marker)
            raise
        if outcome is queue.Outcome.SERVED:
            with self._mutex:
                if self._entry is owner:
                    self._marker, self._mode = marker, EXCLUSIVE
                    return True
        queue.leave(self._session, marker)
        if outcome is queue.Outcome.TIMEOUT:
            self._session.metrics.count("timeouts", "rwlock")
            return False
        raise SessionExpired(f"rwlock {self.name!r} was lost with the session while upgrading")

    def _upgrade_blocker(self, owner: Entry) -> queue.Blocker:
        def blocker(marker: Entry, entries: list[Entry]) -> Sequence[Entry] | queue.Signal | None:
            queue_slots = lock.slots(entries)
            keys = [slot.entry.key for slot in queue_slots]
            if owner.key not in keys:
                raise _HoldEnded()
            at_owner, at_marker = keys.index(owner.key), keys.index(marker.key)
            live = set(keys)
            for slot in queue_slots[:at_marker]:
                if slot.mode == MARKER and slot.owner != owner.key and slot.owner in live:
                    raise UpgradeConflict(f"rwlock {self.name!r}: another holder is already upgrading; "
                                          "release the shared hold and retry")
            if at_owner > 0:
                return (queue_slots[at_owner - 1].entry,)  # a shared holder ahead of me
            region = queue_slots[at_owner + 1:at_marker]
            if not region or queue_slots[at_marker].granted:
                return None
            if region[0].mode == SHARED:
                return (region[0].entry,)  # an admissible reader of my region
            fields = queue.data(queue_slots[at_marker].entry)
            fields["granted"] = True
            granted = self._session.backend.compare_and_set(marker.key, json.dumps(fields).encode(),
                                                          queue_slots[at_marker].entry.version)
            return None if granted is not None else queue.RETRY

        return blocker

    # -- context managers -----------------------------------------------------
    @contextlib.contextmanager
    def read(self, timeout: float | None = None) -> Iterator[RWLock]:
        """``with rw.read():`` a shared hold for the block; LockTimeout if not
        acquired within ``timeout`` (default: the one given to ``coord.rwlock()``)."""
        with self._held(SHARED, timeout):
            yield self

    @contextlib.contextmanager
    def write(self, timeout: float | None = None) -> Iterator[RWLock]:
        """``with rw.write():`` an exclusive hold for the block; like :meth:`read`."""
        with self._held(EXCLUSIVE, timeout):
            yield self

    @contextlib.contextmanager
    def _held(self, mode: str, timeout: float | None) -> Iterator[None]:
        wait = self._timeout if timeout is None else timeout
        blocker = queue.predecessor if mode == EXCLUSIVE else self._reader_blocker
        if not self._acquire(mode, True, wait, blocker):
            raise LockTimeout(f"rwlock {self.name!r} ({mode}) not acquired within {wait}s")
        try:
            yield
        finally:
            self.release()

    # -- session events (from the coordinator) -------------------------------
    def _forget(self) -> Entry | None:
        with self._mutex:
            lost = self._entry
            self._entry = self._marker = self._mode = None
            self.since = None
        return lost

