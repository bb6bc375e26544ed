"""When a connection pool opens one more connection, and which idle one it
closes: the policy the PostgreSQL and MySQL pools share."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

#: Seconds a call waits for a busy connection before the pool opens one more:
#: a new connection costs the server a process or thread and a login, dearer
#: than waiting out one statement. A coordinator's heartbeat, when it comes
#: during one of the application's calls, would otherwise keep a second
#: connection for the coordinator's life.
GRACE = 0.01
#: Seconds an idle connection is kept while another one is idle too: a pool
#: shrinks back to one connection once its calls stop overlapping.
SPARE_IDLE = 10.0

C = TypeVar("C", bound=Hashable)


def may_open_at(busy: int, now: float, until: float) -> float:
    """When a call that found no idle connection may open one more, ``busy``
    connections being open or opening: at once if there are none, or if the
    call's deadline (``until``) is too near to wait; else :data:`GRACE` later."""
    return now if busy == 0 or until - now < 4 * GRACE else now + GRACE


class Idle(Generic[C]):
    """A pool's idle connections, each with the time it was given back (the
    most recently used is handed out first). Not thread-safe: the pool's
    lock guards it."""

    def __init__(self) -> None:
        self._since: dict[C, float] = {}  # in the order given back

    def __bool__(self) -> bool:
        return bool(self._since)

    def take(self) -> C:
        """The most recently used connection, no longer idle."""
        return self._since.popitem()[0]

    def put(self, conn: C, now: float) -> C | None:
        """Keep ``conn`` idle from ``now``; return a connection to close
        instead, if any: the one idle longest, once it has been idle
        :data:`SPARE_IDLE` seconds while another was idle too."""
        self._since[conn] = now
        oldest = next(iter(self._since))
        if oldest is conn or now - self._since[oldest] < SPARE_IDLE:
            return None
        del self._since[oldest]
        return oldest

    def clear(self) -> list[C]:
        """Every idle connection, none left."""
        conns = list(self._since)
        self._since.clear()
        return conns
