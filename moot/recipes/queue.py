"""A FIFO queue of waiters on the sequence primitive: the one mechanism
behind locks and elections.

Each waiter adds an ephemeral sequential entry under the queue's prefix; the
entry's ``seq`` orders the queue and is the fencing token of whoever is
served. A waiter that is not yet served watches exactly the entry that blocks
it (its predecessor), so a release wakes exactly the next waiter: no polling,
no thundering herd. When the watched entry goes (released, timed out, or its
session ended) the waiter reads the queue again.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moot.backends.base import Entry
from moot.coordinator import Coordinator
from moot.errors import ConnectionLost, SessionExpired

#: Given my entry and the live queue sorted by seq, return the entry that
#: blocks me (to watch), or None if I am served.
Blocker = Callable[[Entry, list[Entry]], Entry | None]


def predecessor(mine: Entry, queue: list[Entry]) -> Entry | None:
    """Exclusive service: blocked by the entry just before mine, if any."""
    before = None
    for entry in queue:
        if entry.key == mine.key:
            return before
        before = entry
    return before


@dataclass(frozen=True)
class Waiter:
    """One entry of a queue as seen by introspection."""

    member: str
    since: float
    token: int
    mode: str


def encode(member: str, mode: str) -> bytes:
    return json.dumps({"member": member, "since": time.time(), "mode": mode}).encode()


def decode(entry: Entry) -> Waiter:
    try:
        data: dict[str, Any] = json.loads(entry.value)
    except ValueError:
        data = {}
    return Waiter(str(data.get("member", "?")), float(data.get("since", 0.0)), entry.seq or 0,
                  str(data.get("mode", "exclusive")))


def ordered(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.seq or 0, e.key))


def wait_turn(coord: Coordinator, prefix: str, value: bytes, deadline: float | None,
              blocker: Blocker = predecessor, blocking: bool = True) -> Entry | None:
    """Queue up under ``prefix`` and wait until ``blocker`` says I am served.

    Returns my entry once served, or None (with my entry removed) if the
    deadline passed or ``blocking`` is False and I was not served at once.
    If the session is lost while waiting, waits for the next session and
    queues up again (at the back: the old place died with the session).
    """
    while True:
        coord.check_open()
        if not coord.wait_for_session(deadline):
            return None
        try:
            mine, entries = coord.enqueue(prefix, value)
        except SessionExpired:
            continue
        try:
            served = _wait_in_queue(coord, prefix, mine, ordered(entries), deadline, blocker, blocking)
        except BaseException:
            _leave(coord, mine)
            raise
        if served is None:
            _leave(coord, mine)
            return None
        if served is not _REQUEUE:
            return mine


_REQUEUE = Entry("", b"", 0)


def _leave(coord: Coordinator, mine: Entry) -> None:
    """Withdraw my entry; if the backend is unreachable the heartbeat retries."""
    with contextlib.suppress(ConnectionLost):
        coord.delete_entry(mine.key)


def _wait_in_queue(coord: Coordinator, prefix: str, mine: Entry, queue: list[Entry],
                   deadline: float | None, blocker: Blocker, blocking: bool) -> Entry | None:
    woken = threading.Event()
    session = coord.session_id
    while True:
        if all(entry.key != mine.key for entry in queue):
            return _REQUEUE  # my entry vanished: its session ended
        ahead = blocker(mine, queue)
        if ahead is None:
            return mine
        if not blocking:
            return None
        woken.clear()
        try:
            fresh = _wait_for_change(coord, prefix, ahead, woken, deadline, session)
        except ConnectionLost:
            # The session may well survive a short outage: keep my place and
            # retry until the deadline (the heartbeat decides if it is lost).
            if not _pause(coord, woken, deadline):
                return None
            continue
        if fresh is None:
            return None
        if fresh is _REQUEUE_QUEUE:
            return _REQUEUE
        queue = fresh


_REQUEUE_QUEUE: list[Entry] = []


def _wait_for_change(coord: Coordinator, prefix: str, ahead: Entry, woken: threading.Event,
                     deadline: float | None, session: str | None) -> list[Entry] | None:
    """Wait until ``ahead`` changes; return the queue read afresh, None on
    deadline, or _REQUEUE_QUEUE if my session ended meanwhile."""
    watch = coord.backend.watch(ahead.key, woken.set)
    try:
        # Re-read after arming the watch, so a release in between is not missed.
        if coord.backend.get(ahead.key) is not None:
            remaining = None if deadline is None else deadline - time.monotonic()
            while not woken.wait(_slice(remaining)):
                coord.check_open()
                if not coord.wait_for_session(deadline):
                    return None
                if coord.session_id != session:
                    return _REQUEUE_QUEUE
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
    finally:
        watch.cancel()
    return ordered(coord.backend.list(prefix))


def _pause(coord: Coordinator, woken: threading.Event, deadline: float | None) -> bool:
    """Back off briefly after a failed round trip; False once the deadline passed."""
    coord.check_open()
    pause = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
    if pause <= 0:
        return False
    woken.wait(pause)
    return True


def _slice(remaining: float | None) -> float:
    """Wake up at least every second to notice close() and session loss."""
    if remaining is None:
        return 1.0
    return max(0.0, min(remaining, 1.0))
