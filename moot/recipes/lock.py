"""Locks: exclusive and shared holds in one FIFO queue per name; fenced,
introspectable, on every backend alike.

Guarantees (checked by the conformance suite on every backend):

* Mutual exclusion while the holder's session lives.
* ``token``: an int strictly greater than the token of every earlier
  acquisition of the same lock name, across restarts of every client.
* Waiters are served in arrival order; a release wakes only the next one.
* A holder learns it lost the lock (session expired or evicted): ``is_held``
  turns False and ``on_lost`` is called, on the coordinator's callback thread.
* ``release()`` never raises for a lock that is not held or already gone.
* ``coord.lock_info(name)`` tells who holds it (every holder, with its mode),
  since when, with which token, and who waits, from any client.

One queue per name serves both :class:`Lock` (``coord.lock(name)``) and
:class:`moot.recipes.rwlock.RWLock` (``coord.rwlock(name)``): a plain lock is
an exclusive entry, so ``coord.lock(n)`` and ``coord.rwlock(n).read()``
exclude each other. The serving rules, stated on the live queue sorted by
seq (the functions below implement them; rwlock.py proves them):

* an *exclusive* entry is served iff it is the head of the queue;
* a *shared* entry is served iff no exclusive entry and no upgrade marker is
  ahead of it, and it is not inside the region of a granted upgrade (between
  the upgrading entry and its marker);
* an *upgrade marker* (a queue entry that records a shared holder's wish to
  become exclusive, see rwlock.py) is never a holder; its owner is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from moot import names, waits
from moot.backends.base import Entry, Watch
from moot.errors import LockTimeout
from moot.recipes import queue
from moot.recipes.hold import Held, Hold
from moot.recipes.queue import Waiter
from moot.session import Session


def lock_prefix(session: Session, name: str) -> str:
    return session.key("lock", names.segment(name), "q") + "/"


#: Modes of queue entries (stored in each entry) and of holders (introspection).
EXCLUSIVE = "exclusive"
SHARED = "shared"
UPGRADING = "upgrading"  # a shared holder whose upgrade is not granted yet
MARKER = "upgrade"  # an upgrade marker entry; never a holder or waiter itself


@dataclass(frozen=True)
class LockInfo:
    """A lock as seen from any client.

    ``holders``: every current holder in queue order, each with its mode
    (one ``"exclusive"`` holder, or ``"shared"`` holders of which one may be
    ``"upgrading"``). ``holder``, ``token``, ``since`` and ``mode`` describe
    the first holder (``mode`` is ``"free"`` in the rare instant where only
    waiters are queued). ``waiters``: who waits, in order, with its mode.
    """

    name: str
    holder: str | None
    token: int | None
    since: float | None
    waiters: tuple[Waiter, ...]
    mode: str = EXCLUSIVE
    holders: tuple[Waiter, ...] = ()


@dataclass(frozen=True)
class Slot:
    """One queue entry with its lock fields decoded."""

    entry: Entry
    mode: str  # EXCLUSIVE, SHARED or MARKER (anything unknown counts as EXCLUSIVE)
    owner: str | None  # a marker's upgrading entry (its key)
    granted: bool  # a marker whose upgrade was granted (flag set)


def slots(entries: list[Entry]) -> list[Slot]:
    """The queue (sorted by seq) as slots."""
    result = []
    for entry in entries:
        fields = queue.data(entry)
        mode = fields.get("mode")
        if mode not in (SHARED, MARKER):
            mode = EXCLUSIVE
        owner = fields.get("owner") if mode == MARKER else None
        result.append(Slot(entry, mode, owner if isinstance(owner, str) else None, fields.get("granted") is True))
    return result


def reader_state(index: int, queue_slots: list[Slot]) -> tuple[Slot | None, list[Slot]]:
    """Where the shared entry at ``index`` stands: ``(blocker, [])`` if it
    must wait for ``blocker`` (the nearest exclusive entry or marker ahead of
    it, else a granted marker whose region holds it); else ``(None,
    pending)``: it is served once it has registered with each ``pending``
    marker (upgrades not granted yet whose region holds it)."""
    for slot in reversed(queue_slots[:index]):
        if slot.mode != SHARED:
            return slot, []
    ahead = {slot.entry.key for slot in queue_slots[:index]}
    pending = []
    for slot in queue_slots[index + 1:]:
        if slot.mode == MARKER and slot.owner in ahead:
            if slot.granted:
                return slot, []
            pending.append(slot)
    return None, pending


def upgrade_granted(marker: Slot, queue_slots: list[Slot]) -> bool:
    """The marker's upgrade is granted: flagged so, or its owner is the head
    with nothing between the owner and the marker (then no shared entry can
    ever be admitted beside the owner, and no flag is needed)."""
    if marker.granted:
        return True
    return len(queue_slots) >= 2 and queue_slots[0].entry.key == marker.owner \
        and queue_slots[1].entry.key == marker.entry.key


def holders(queue_slots: list[Slot]) -> list[tuple[Slot, str]]:
    """The served entries (see the module docstring), with their modes."""
    markers = {slot.owner: slot for slot in queue_slots if slot.mode == MARKER}
    result = []
    for index, slot in enumerate(queue_slots):
        if slot.mode == EXCLUSIVE and index == 0:
            result.append((slot, EXCLUSIVE))
        elif slot.mode == SHARED and reader_state(index, queue_slots)[0] is None:
            marker = markers.get(slot.entry.key)
            if marker is None:
                result.append((slot, SHARED))
            else:
                result.append((slot, EXCLUSIVE if upgrade_granted(marker, queue_slots) else UPGRADING))
    return result


class Lock(Hold):
    """An exclusive lock named ``name``; see the module docstring.

    One ``Lock`` object is one would-be holder: two objects with the same
    name exclude each other, even in one process. Not reentrant: the thread
    holding it calling ``acquire()`` again raises LockError.

    One object may be shared by several threads, as a module-level
    ``threading.Lock``: another thread's ``acquire()`` waits (honouring
    ``blocking`` and ``timeout``) until the object is released, then queues
    up and is served in its turn; ``release()`` may come from any thread. A
    hold lost with the session keeps the other threads waiting until its
    thread calls ``release()``. asyncio tasks sharing one object get
    LockError instead of waiting. See :mod:`moot.recipes.hold`.
    """

    kind = "lock"

    def __init__(self, session: Session, name: str, timeout: float | None = None,
                 on_lost: Callable[[Lock], None] | None = None):
        name = names.check_name(name, "lock name")
        super().__init__(session, name, lock_prefix(session, name), timeout, on_lost)

    def __repr__(self) -> str:
        state = f"held token={self.token}" if self.is_held else "not held"
        return f"<moot.Lock {self.name!r} {state}>"

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; True once held, False if not (non-blocking, or timeout ran out).

        ``timeout`` (seconds, None = forever) defaults to the one given to
        ``coord.lock()``. Raises LockError if this object already holds it.
        """
        return self._acquire(EXCLUSIVE, blocking, timeout, queue.predecessor)

    def acquire_plan(self, blocking: bool = True, timeout: float | None = None) -> waits.Plan[bool]:
        """:meth:`acquire` as a plan (:mod:`moot.waits`) for :mod:`moot.aio`."""
        return self._acquire_plan(EXCLUSIVE, blocking, timeout, queue.predecessor)

    def __enter__(self) -> Held:
        """``with coord.lock(name) as held:``: ``held`` is this acquisition
        (:class:`~moot.recipes.hold.Held`: ``held.token`` is an int)."""
        if not self.acquire(timeout=self._timeout):
            raise LockTimeout(f"lock {self.name!r} not acquired within {self._timeout}s")
        return self.held()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()



def _info(name: str, entries: list[Entry]) -> LockInfo | None:
    queue_slots = slots(queue.ordered(entries))
    held = holders(queue_slots)
    held_keys = {slot.entry.key for slot, _ in held}
    holding = tuple(queue.decode(slot.entry, mode) for slot, mode in held)
    waiters = tuple(queue.decode(slot.entry, slot.mode) for slot in queue_slots
                    if slot.mode != MARKER and slot.entry.key not in held_keys)
    if not holding and not waiters:
        return None
    if not holding:
        return LockInfo(name, None, None, None, waiters, "free", ())
    first = holding[0]
    return LockInfo(name, first.member, first.token, first.since, waiters, first.mode, holding)


def lock_info(session: Session, name: str) -> LockInfo | None:
    names.check_name(name, "lock name")
    return _info(name, session.backend.list(lock_prefix(session, name)))


def watch_lock(session: Session, name: str, callback: Callable[[], None]) -> Watch:
    names.check_name(name, "lock name")
    return session.backend.watch(lock_prefix(session, name), callback)


def all_locks(session: Session) -> list[LockInfo]:
    root = session.key("lock") + "/"
    by_name: dict[str, list[Entry]] = {}
    for entry in session.backend.list(root):
        segment = entry.key[len(root):].split("/", 1)[0]
        by_name.setdefault(names.unsegment(segment), []).append(entry)
    infos = (_info(name, entries) for name, entries in sorted(by_name.items()))
    return [info for info in infos if info is not None]
