"""A FIFO queue of waiters on the sequence primitive: the one mechanism
behind locks, shared/exclusive locks, semaphores and elections.

Each waiter adds an ephemeral sequential entry under the queue's prefix; the
entry's ``seq`` orders the queue and is the fencing token of whoever is
served. Who is served is decided by a *blocker* (a function of my entry and
the live queue, sorted by seq). A waiter that is not yet served watches only
the entries the blocker names (for an exclusive lock: its predecessor), so a
release wakes exactly the waiter it can admit: no polling, no thundering herd.
When a watched entry changes or goes (released, timed out, or its session
ended) the waiter reads the queue again and asks the blocker again.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from moot import deadline as call_deadline
from moot.backends.base import Entry, Watch
from moot.errors import ConnectionLost, SessionExpired
from moot.session import CLEANUP_GRACE, Session, SessionListener
from moot.waits import Steps, Wait, Wake


#: Given my entry and the live queue sorted by seq, return None if I am
#: served; else the entries to watch (I am asked again when one of them
#: changes or goes); or RETRY to be asked again at once
#: with the queue read afresh (e.g. the blocker's own compare-and-set lost a
#: race). A blocker may raise to end the wait; the exception propagates.
class Signal(enum.Enum):
    """Answers that are not data: a blocker's RETRY, a wait's SESSION_ENDED."""

    RETRY = "retry"
    SESSION_ENDED = "session ended"


RETRY = Signal.RETRY
Blocker = Callable[[Entry, list[Entry]], Sequence[Entry] | Signal | None]



def predecessor(mine: Entry, queue: list[Entry]) -> Sequence[Entry] | None:
    """Exclusive service: blocked by the entry just before mine, if any."""
    before = None
    for entry in queue:
        if entry.key == mine.key:
            break
        before = entry
    return None if before is None else (before,)


@dataclass(frozen=True)
class Waiter:
    """One holder or waiter of a queue as seen by introspection: ``mode`` is
    ``"exclusive"``, ``"shared"``, ``"upgrading"`` (a shared holder waiting to
    become exclusive), ``"semaphore"`` or ``"leader"``."""

    member: str
    since: float
    token: int
    mode: str


def encode(member: str, mode: str, **extra: Any) -> bytes:
    """An entry's value: who queued, when (to the microsecond), in which mode (and ``extra`` fields)."""
    if extra:
        return json.dumps({"member": member, "since": time.time(), "mode": mode, **extra}).encode()
    head, tail = _framing(member, mode)
    micros = time.time_ns() // 1000  # printed as an int pair: a float's repr costs more than the rest together
    return b"%s%d.%06d%s" % (head, micros // 1_000_000, micros % 1_000_000, tail)


@functools.lru_cache(maxsize=256)
def _framing(member: str, mode: str) -> tuple[bytes, bytes]:
    """What :func:`encode` writes before and after the time."""
    return b'{"member": %s, "since": ' % json.dumps(member).encode(), b', "mode": %s}' % json.dumps(mode).encode()


def data(entry: Entry) -> dict[str, Any]:
    """The JSON object stored in an entry ({} if unreadable)."""
    try:
        value = json.loads(entry.value)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def decode(entry: Entry, mode: str | None = None) -> Waiter:
    """The entry as a Waiter; ``mode`` overrides the stored one."""
    fields = data(entry)
    return Waiter(str(fields.get("member", "?")), float(fields.get("since", 0.0)), entry.seq or 0,
                  mode or str(fields.get("mode", "exclusive")))


def ordered(entries: list[Entry]) -> list[Entry]:
    if len(entries) < 2:
        return list(entries)
    return sorted(entries, key=_order)


def _order(entry: Entry) -> tuple[int, str]:
    return entry.seq or 0, entry.key


class Outcome(enum.Enum):
    """How a wait in the queue ended."""

    SERVED = "served"
    TIMEOUT = "timeout"  # deadline passed, or not served at once when not blocking
    GONE = "gone"  # my entry vanished: its session ended


#: Puts a served entry in place in its holder (run under the coordinator's
#: bind lock with the session's epoch, see :func:`wait_turn`).
Install = Callable[[Entry, int], None]


def wait_turn(session: Session, prefix: str, value: bytes, deadline: float | None,
              blocker: Blocker = predecessor, blocking: bool = True, *,
              holder: SessionListener, install: Install) -> Steps[Entry | None]:
    """The steps (:mod:`moot.waits`) that queue up under ``prefix`` and wait
    until ``blocker`` says I am served.

    Once served, ``install(entry, epoch)`` runs and ``holder`` is bound to
    the session in one step, and only if the session the entry was made in
    is still trusted: a session lost at any moment after that is reported to
    ``holder``. Returns my entry once served, or None (with my entry removed)
    if the deadline passed or ``blocking`` is False and I was not served at
    once. If the session is lost while waiting, waits for the next session
    and queues up again (at the back: the old place died with the session).
    While the engine cannot be reached a blocking call retries until its
    deadline; a non-blocking one raises ConnectionLost at once. Closing the
    steps while waiting (a cancelled task) withdraws my entry.
    """
    while True:
        session.check_open()
        if not session.live() and not (yield from session.session_steps(deadline if blocking
                                                                          else time.monotonic())):
            if not blocking:
                raise ConnectionLost(f"no live session with {session.url} right now (reconnecting); "
                                     "try again later")
            return None
        epoch = session.epoch
        try:
            mine, entries = session.enqueue(prefix, value)
        except SessionExpired:
            continue
        except ConnectionLost:
            if not blocking:
                raise
            if not (yield from _pause(session, deadline)):
                return None
            continue
        try:
            queue = ordered(entries)
            try:  # most acquires are served at once: no generator for them
                checked = _check(session, prefix, mine, queue, blocker)
            except ConnectionLost:
                if not blocking:
                    raise
                checked = None
            if isinstance(checked, Outcome):
                outcome = checked
            elif checked is not None and not blocking:
                outcome = Outcome.TIMEOUT
            else:
                outcome = yield from wait_served(session, prefix, mine, queue, deadline, blocker, blocking,
                                                 watched=checked)
            if outcome is Outcome.SERVED and _before_bind is not None:
                _before_bind()
            if outcome is Outcome.SERVED and session.bind(holder, epoch, install, mine, epoch):
                return mine
        except BaseException:
            leave(session, mine)
            raise
        if outcome is not Outcome.GONE:  # timed out, or served as the session was given up
            leave(session, mine)
        if outcome is Outcome.TIMEOUT:
            return None


#: Test hook: called after the queue says "served" and before the hold is
#: bound (where a descheduled thread may pause for any length of time).
_before_bind: Callable[[], None] | None = None


def leave(session: Session, mine: Entry) -> None:
    """Withdraw my entry, even past the caller's deadline (by a short grace);
    if the backend is unreachable the heartbeat retries."""
    with call_deadline.replaced(time.monotonic() + min(session.timeout, CLEANUP_GRACE)), \
            contextlib.suppress(ConnectionLost):
        session.delete_entry(mine.key)


def wait_served(session: Session, prefix: str, mine: Entry, entries: list[Entry], deadline: float | None,
                blocker: Blocker, blocking: bool = True,
                watched: Sequence[Entry] | None = None) -> Steps[Outcome]:
    """Steps that wait until ``blocker`` says my (existing) entry is served, starting from
    the queue as read in ``entries``. Leaves the entry in place whatever the
    outcome. While the backend cannot be reached the wait keeps my place and
    retries until the deadline (the heartbeat decides if the session is lost);
    a non-blocking call raises ConnectionLost instead. ``watched``: what the
    caller's own check of ``entries`` (sorted) said to watch, not asked again."""
    woken: Wake | None = None  # made on the first wait: most acquires never wait
    session_id = session.id
    queue = entries if watched is not None else ordered(entries)
    while True:
        try:
            if watched is None:
                checked = _check(session, prefix, mine, queue, blocker)
                if isinstance(checked, Outcome):
                    return checked
                watched = checked
            if not blocking:
                return Outcome.TIMEOUT
            woken = woken or Wake()
            woken.clear()
            fresh = yield from _wait_for_change(session, prefix, watched, woken, deadline, session_id,
                                                _once_gone(mine, queue, watched, blocker))
        except ConnectionLost:
            if not blocking:
                raise
            if not (yield from _pause(session, deadline)):
                return Outcome.TIMEOUT
            watched = None
            continue
        if fresh is None:
            return Outcome.TIMEOUT
        if isinstance(fresh, Signal):  # SESSION_ENDED
            return Outcome.GONE
        queue, watched = fresh, None


def _check(session: Session, prefix: str, mine: Entry, queue: list[Entry],
           blocker: Blocker) -> Outcome | Sequence[Entry]:
    """SERVED or GONE, else the entries to watch; ``queue`` (sorted) is
    read again as long as the blocker says RETRY. ``queue`` is the list
    last read (the caller keeps it, for a wait)."""
    while True:
        key = mine.key
        for entry in queue:
            if entry.key == key:
                break
        else:
            return Outcome.GONE
        watched = blocker(mine, queue)
        if watched is None:
            return Outcome.SERVED
        if not isinstance(watched, Signal):
            return watched
        queue[:] = ordered(session.backend.list(prefix))  # RETRY


def _once_gone(mine: Entry, queue: list[Entry], watched: Sequence[Entry],
               blocker: Blocker) -> tuple[Entry, list[Entry], list[Entry]] | None:
    """Under exclusive service: my entry, the entries before it in
    ``queue``, and the queue as it is once they are all gone, which then
    follows from ``queue`` alone: every later entry has a greater seq, so
    none can come before mine, which is first if it is still there. The
    backend may know that, when the watched entry (the one just before
    mine) goes: :meth:`Watch.cleared_for`. None for other services."""
    if blocker is not predecessor or len(watched) != 1 or mine.owner is None:
        return None
    for index, entry in enumerate(queue):
        if entry.key == mine.key:
            if index and queue[index - 1].key == watched[0].key:
                return mine, queue[:index], queue[index:]
            return None
    return None


def _wait_for_change(session: Session, prefix: str, watched: Sequence[Entry], woken: Wake,
                     deadline: float | None, session_id: str | None,
                     once_gone: tuple[Entry, list[Entry], list[Entry]] | None = None
                     ) -> Steps[list[Entry] | Signal | None]:
    """Wait until one of ``watched`` changes or goes; return the queue read
    afresh, None on deadline, or SESSION_ENDED if my session ended meanwhile.
    ``once_gone``'s queue (see :func:`_once_gone`) is returned without a read
    when the engine told of the watched entry's deletion at a moment when
    the entries ahead of mine were gone and mine still there
    (:meth:`Watch.cleared_for`): a lock handoff costs the release and its
    notice, and no read queued behind the next writes."""
    watches: list[Watch] = []
    try:
        # Read again once the watches are armed, so a change in between is not missed.
        if len(watched) == 1:
            watch, unchanged = session.backend.watch_unchanged(watched[0], woken.set)
            watches.append(watch)
            if not unchanged:
                return _after_change(session, prefix, watch, once_gone)
            if once_gone is not None:
                watch.will_ask_cleared(once_gone[0], once_gone[1])
        else:
            for entry in watched:
                watches.append(session.backend.watch(entry.key, woken.set))
            fresh = ordered(session.backend.list(prefix))
            versions = {entry.key: entry.version for entry in fresh}
            if any(versions.get(entry.key) != entry.version for entry in watched):
                return fresh
        remaining = None if deadline is None else deadline - time.monotonic()
        while not (yield Wait(woken, _slice(remaining))):
            session.check_open()
            if not (yield from session.session_steps(deadline)):
                return None
            if session.id != session_id:
                return Signal.SESSION_ENDED
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
    finally:
        for watch in watches:
            watch.cancel()
    return _after_change(session, prefix, watches[0], once_gone)  # once_gone is None unless one is watched


def _after_change(session: Session, prefix: str, watch: Watch,
                  once_gone: tuple[Entry, list[Entry], list[Entry]] | None) -> list[Entry]:
    """The queue once ``watch`` told of a change: ``once_gone``'s if the
    way is known clear for my entry, else read."""
    if once_gone is not None and watch.cleared_for(once_gone[0], once_gone[1]):
        return once_gone[2]
    return ordered(session.backend.list(prefix))


def _pause(session: Session, deadline: float | None) -> Steps[bool]:
    """Back off briefly after a failed round trip; False once the deadline passed."""
    session.check_open()
    pause = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
    if pause <= 0:
        return False
    yield Wait(None, pause)
    return True


def _slice(remaining: float | None) -> float:
    """Wake up at least every second to notice close() and session loss."""
    if remaining is None:
        return 1.0
    return max(0.0, min(remaining, 1.0))
