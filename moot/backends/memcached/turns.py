"""This process's writers of one memcached directory take turns, and the
writer whose turn it is carries the changes queued behind it.

Writers in one process that raced for a directory's CAS value would all but
one lose it and send the whole directory again (a thousand members joining
at once from a few processes wasted ten writes per member). Queued, they
lose only to other processes, and each plans on the directory its
predecessor wrote (``Gate.latest``), as on its own cache: no read first.
And the writer whose turn comes takes the changes queued behind it into
its own write (:func:`lead`): a herd of a thousand joiners
in one process sends a few dozen directory writes, not a thousand.
See docs/design/memcached.md, "Writers of one directory".
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from moot import realthreads
from moot.backends.memcached.dirs import Directory
from moot.realthreads import threading

if TYPE_CHECKING:
    from moot.backends.memcached.store import Plan, Store

#: The most changes of one directory that one write carries (the writer whose turn it is, and
#: those of this process queued behind it).
BATCH = 64
#: How long past its own deadline a writer waits for the write that carries its change (which
#: ends by its leader's deadline, plus the time its error takes to surface).
CARRIED_SLACK = 5.0


class InLine(TimeoutError):
    """The caller's deadline passed while this process's other writers of
    the directory had their turns (nothing was sent)."""


class Writer:
    """One change of a directory by one caller: its plan and deadline, and,
    once done, its outcome (``done``: the plan committed or the one that
    wrote nothing, and its sessions' liveness) or ``error``. ``event``,
    made once the writer has to queue, is set when the caller's turn comes
    or when another writer's batch did the change (``taken``)."""

    __slots__ = ("done", "error", "event", "plan", "store", "taken", "until")

    def __init__(self, plan: Callable[[Directory], Plan], until: float, store: Store):
        self.plan = plan
        self.until = until
        self.store = store  # the caller's: told of the write that carries the change
        self.event: threading.Event | None = None  # a writer whose turn is at once never waits
        self.taken = False
        self.done: tuple[Plan, dict[str, bool]] | None = None
        self.error: BaseException | None = None

    def outcome(self) -> tuple[Plan, dict[str, bool]]:
        if self.error is not None:
            raise self.error
        assert self.done is not None
        return self.done


class Gate:
    """This process's writers of one directory: one at a time, the others
    queued in arrival order (``waiting``), and ``latest``: the directory as
    last written or read by one of them."""

    def __init__(self) -> None:
        self.busy = False
        self.waiting: collections.deque[Writer] = collections.deque()
        self.users = 0
        self.latest: Directory | None = None


_gates: dict[tuple[str, str], Gate] = {}
_gates_lock = threading.Lock()  # real; held for no I/O


def _forget_gates() -> None:
    """In a forked child: the writers that held or awaited a gate stayed in the parent."""
    global _gates_lock
    _gates.clear()
    _gates_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_gates)


def _release(key: tuple[str, str], gate: Gate) -> None:
    """Pass ``gate`` to the next writer in line (called with _gates_lock held)."""
    if gate.waiting:
        _wake(gate.waiting.popleft())
    else:
        gate.busy = False
    gate.users -= 1
    if gate.users == 0:
        del _gates[key]


def line_up(key: tuple[str, str], writer: Writer) -> Gate | None:
    """Wait for ``writer``'s turn as the only writer of directory ``key`` in
    this process, after those that came first: the gate once it is its
    turn (the caller then releases it), or None when a writer ahead took
    its change into its own write (``writer`` then holds the outcome).
    InLine if neither happens before the writer's deadline."""
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = Gate()
        gate.users += 1
        if not gate.busy:
            gate.busy = True
            return gate
        writer.event = event = threading.Event()
        gate.waiting.append(writer)
    interrupted = True
    try:
        realthreads.wait_until(event.is_set, event.wait, max(0.0, writer.until - time.monotonic()))
        interrupted = False
    finally:
        with _gates_lock:
            taken, mine = writer.taken, event.is_set() and not writer.taken
            if mine and interrupted:  # the turn came, but the caller leaves: pass it on
                _release(key, gate)
            elif not mine and not taken:  # the deadline passed (or the wait was interrupted) in line
                gate.waiting.remove(writer)
                gate.users -= 1
                if gate.users == 0:
                    del _gates[key]
    if taken:
        # The write that carries it is bounded by its leader's deadline, which is not after this
        # writer's: its outcome comes by then, at worst with the leader's error.
        if not realthreads.wait_until(event.is_set, event.wait,
                                      max(0.0, writer.until - time.monotonic()) + CARRIED_SLACK):
            raise TimeoutError(f"the write of directory {key[1]!r:.80} that carried this change did not end "
                               "in time (it may still be written)")
        return None
    if not mine:
        raise InLine(f"this process's other writers of directory {key[1]!r:.80} took the time left")
    return gate


def lead(gate: Gate, leader: Writer) -> list[Writer]:
    """The writers queued behind ``leader``, whose turn it is, that its write
    carries: in arrival order, up to :data:`BATCH` in all, those whose
    deadline is not before the leader's (the write is bounded by the
    leader's deadline: none of them returns late). Those left keep their
    place in line."""
    taken: list[Writer] = []
    kept: collections.deque[Writer] = collections.deque()
    with _gates_lock:
        if not gate.waiting:
            return taken
        for writer in gate.waiting:
            if len(taken) < BATCH - 1 and writer.until >= leader.until:
                writer.taken = True
                taken.append(writer)
            else:
                kept.append(writer)
        gate.waiting = kept
        gate.users -= len(taken)
    return taken


def pass_on(key: tuple[str, str], gate: Gate, carried: list[Writer]) -> None:
    """The leader's write is done: the turn goes to the next writer in line,
    and the writers it carried (their outcome or error set) are told."""
    with _gates_lock:
        _release(key, gate)
    for writer in carried:
        _wake(writer)


def _wake(writer: Writer) -> None:
    """Tell a queued writer that its turn came, or that its change was written."""
    assert writer.event is not None  # made when it queued
    writer.event.set()
