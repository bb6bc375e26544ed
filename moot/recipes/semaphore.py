"""Counting semaphores on the FIFO queue: at most ``limit`` holders of a name
at once, served in arrival order, each acquisition with a fencing token.

Guarantees, on every backend:

* At most ``limit`` holders while their sessions live: the first ``limit``
  entries of the queue hold, the others wait in order.
* ``token``: the acquisition's queue seq, strictly greater than the token
  of every acquisition that queued before it.
* No thundering herd: the first waiter watches the ``limit`` holders (any of
  them leaving admits it); every other waiter watches its predecessor only.
  A waiter that is admitted after waiting rewrites its own entry once, which
  wakes the waiter behind it (now first) and nobody else.
* A holder learns it lost its hold (``is_held`` False, ``on_lost``);
  ``release()`` never raises for a hold that is not held or already gone.

The limit is part of the semaphore, not of one process: the first acquire
stores it (a persistent key beside the queue, read with every enqueue at no
extra round trip), and an acquire with another limit raises
:class:`SemaphoreLimitMismatch` (its entry withdrawn at once). To change a
limit, stop every user of the semaphore and call :func:`reset_limit`.

Introspection: ``sem.info()`` / ``sem.holders()`` from any client, and
:func:`semaphores` for every semaphore in use in a namespace. Semaphores have
their own names: ``coord.semaphore("x", 2)`` and ``coord.lock("x")`` are
unrelated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from moot import names, waits
from moot.backends.base import Entry
from moot.errors import InvalidArgument, LockError, LockTimeout, SemaphoreLimitMismatch
from moot.recipes import queue
from moot.recipes.hold import Hold
from moot.recipes.queue import Waiter
from moot.session import Session

MODE = "semaphore"
_LIMIT = "limit"  # the stored limit's key, inside the queue prefix (sequential keys are all digits)


@dataclass(frozen=True)
class SemaphoreInfo:
    """A semaphore as seen from any client: its stored limit (None if never
    acquired), its holders and its waiters, each in queue order."""

    name: str
    limit: int | None
    holders: tuple[Waiter, ...]
    waiters: tuple[Waiter, ...]


def _prefix(session: Session, name: str) -> str:
    return session.key("semaphore", names.segment(name), "q") + "/"


def _stored_limit(entry: Entry) -> int | None:
    try:
        return int(entry.value)
    except ValueError:
        return None


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(f"a semaphore limit must be an int >= 1, not {limit!r}")
    return limit


class Semaphore(Hold):
    """At most ``limit`` holders of ``name``; see the module docstring.

    One ``Semaphore`` object is one would-be holder; not reentrant.
    """

    kind = "semaphore"

    def __init__(self, session: Session, name: str, limit: int, timeout: float | None = None,
                 on_lost: Callable[[Semaphore], None] | None = None):
        name = names.check_name(name, "semaphore name")
        self.limit = _check_limit(limit)
        super().__init__(session, name, _prefix(session, name), timeout, on_lost)
        self._limit_key = self._prefix + _LIMIT

    def __repr__(self) -> str:
        state = f"held token={self.token}" if self.is_held else "not held"
        return f"<moot.Semaphore {self.name!r} limit={self.limit} {state}>"

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take one of the ``limit`` places; True once held, False if not
        (non-blocking, or timeout ran out). ``timeout`` defaults to the one
        given to ``coord.semaphore()``. Raises SemaphoreLimitMismatch if the
        semaphore is used with another limit, LockError if this object
        already holds it."""
        return waits.run(self.acquire_plan(blocking, timeout))

    def acquire_plan(self, blocking: bool = True, timeout: float | None = None) -> waits.Plan[bool]:
        """:meth:`acquire` as a plan (:mod:`moot.waits`) for :mod:`moot.aio`."""
        return self._acquire_plan(MODE, blocking, timeout, self._blocker())

    def _blocker(self) -> queue.Blocker:
        waited = False

        def blocker(mine: Entry, entries: list[Entry]) -> Sequence[Entry] | queue.Signal | None:
            nonlocal waited
            stored = next((e for e in entries if e.key == self._limit_key), None)
            if stored is None:  # the first use of this name: store my limit
                stored = self._session.backend.create(self._limit_key, str(self.limit).encode())
                if stored is None:
                    return queue.RETRY  # someone stored one first: read it
            if _stored_limit(stored) != self.limit:
                raise SemaphoreLimitMismatch(
                    f"semaphore {self.name!r} is used with limit {stored.value.decode(errors='replace')}, "
                    f"not {self.limit}; every user must pass the same limit (reset_limit() changes it "
                    "once nobody uses it)")
            members = [e for e in entries if e.key != self._limit_key]
            index = next(i for i, e in enumerate(members) if e.key == mine.key)
            if index >= self.limit:
                waited = True
                return members[:self.limit] if index == self.limit else (members[index - 1],)
            if waited:  # the waiter behind me watches me: tell it I am a holder now
                fields = queue.data(members[index])
                fields["admitted"] = time.time()
                if self._session.backend.compare_and_set(mine.key, json.dumps(fields).encode(),
                                                       members[index].version) is None:
                    return queue.RETRY
                waited = False
            return None

        return blocker

    def __enter__(self) -> Semaphore:
        if not self.acquire(timeout=self._timeout):
            raise LockTimeout(f"semaphore {self.name!r} not acquired within {self._timeout}s")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # -- introspection --------------------------------------------------------
    def info(self) -> SemaphoreInfo:
        """Stored limit, holders and waiters, read from the backend."""
        return _info(self.name, self._session.backend.list(self._prefix), self._limit_key)

    def holders(self) -> list[Waiter]:
        """The current holders, in queue order."""
        return list(self.info().holders)

    # -- session events (from the coordinator) ---------------------------------


def _info(name: str, entries: list[Entry], limit_key: str) -> SemaphoreInfo:
    stored = next((e for e in entries if e.key == limit_key), None)
    limit = None if stored is None else _stored_limit(stored)
    members = [queue.decode(e) for e in queue.ordered([e for e in entries if e.key != limit_key])]
    served = len(members) if limit is None else limit
    return SemaphoreInfo(name, limit, tuple(members[:served]), tuple(members[served:]))


def semaphores(session: Session) -> list[SemaphoreInfo]:
    """Every semaphore of the namespace that is held or waited for, by name."""
    root = session.key("semaphore") + "/"
    by_name: dict[str, list[Entry]] = {}
    for entry in session.backend.list(root):
        by_name.setdefault(entry.key[len(root):].split("/", 1)[0], []).append(entry)
    infos = [_info(names.unsegment(segment), entries, root + segment + "/q/" + _LIMIT)
             for segment, entries in by_name.items()]
    return sorted((info for info in infos if info.holders or info.waiters), key=lambda info: info.name)


def reset_limit(session: Session, name: str) -> bool:
    """Forget the stored limit of semaphore ``name``, so that the next acquire
    stores its own; True if one was stored. Raises LockError while anybody
    holds or waits for it. Meant for operators changing a limit with every
    user of the semaphore stopped (a user that starts meanwhile may store
    its limit first: the others then get SemaphoreLimitMismatch)."""
    names.check_name(name, "semaphore name")
    prefix = _prefix(session, name)
    entries = session.backend.list(prefix)
    if any(e.key != prefix + _LIMIT for e in entries):
        raise LockError(f"semaphore {name!r} is in use; stop its users before changing its limit")
    return session.backend.delete(prefix + _LIMIT)
