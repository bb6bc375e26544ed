"""Listings across a namespace that the recipes themselves do not offer:
every election with a candidate, and watches on one semaphore's or one
election's queue (what ``moot elections`` and ``moot watch`` need).

Read-only: nothing here writes to the backend. The key layouts are those of
:mod:`moot.recipes.election` (``election/<name>/q/<seq>``) and
:mod:`moot.recipes.semaphore` (``semaphore/<name>/q/<seq>`` and its stored
``limit``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from moot import names
from moot.backends.base import Entry, Watch
from moot.recipes import queue
from moot.recipes.queue import Waiter
from moot.session import Session

__all__ = ["ElectionInfo", "election_info", "elections", "watch_election", "watch_semaphore"]


@dataclass(frozen=True)
class ElectionInfo:
    """An election as seen from any client: its candidates in queue order,
    the first of which leads. ``leader``, ``token`` and ``since`` repeat the
    first candidate (``since``: when it queued)."""

    name: str
    candidates: tuple[Waiter, ...]

    @property
    def leader(self) -> str:
        return self.candidates[0].member

    @property
    def token(self) -> int:
        return self.candidates[0].token

    @property
    def since(self) -> float:
        return self.candidates[0].since


def _election_prefix(session: Session, name: str) -> str:
    return session.key("election", names.segment(name), "q") + "/"


def _info(name: str, entries: list[Entry]) -> ElectionInfo | None:
    candidates = tuple(queue.decode(e) for e in queue.ordered(entries))
    return ElectionInfo(name, candidates) if candidates else None


def elections(session: Session) -> list[ElectionInfo]:
    """Every election of the namespace with at least one candidate, by name
    (one ``list`` of the namespace's elections)."""
    root = session.key("election") + "/"
    by_name: dict[str, list[Entry]] = {}
    for entry in session.backend.list(root):
        segment, _, rest = entry.key[len(root):].partition("/")
        if rest.startswith("q/") and "/" not in rest[2:]:  # a candidate: election/<name>/q/<seq>
            by_name.setdefault(names.unsegment(segment), []).append(entry)
    infos = (_info(name, entries) for name, entries in sorted(by_name.items()))
    return [info for info in infos if info is not None]


def election_info(session: Session, name: str) -> ElectionInfo | None:
    """Election ``name``'s candidates, or None if nobody campaigns."""
    names.check_name(name, "election name")
    return _info(name, session.backend.list(_election_prefix(session, name)))


def watch_election(session: Session, name: str, callback: Callable[[], None]) -> Watch:
    """Call ``callback()`` after any candidate of election ``name`` queues or
    leaves (the leader's change included); ``cancel()`` to stop."""
    names.check_name(name, "election name")
    return session.backend.watch(_election_prefix(session, name), callback)


def watch_semaphore(session: Session, name: str, callback: Callable[[], None]) -> Watch:
    """Call ``callback()`` after any holder or waiter of semaphore ``name``
    queues or leaves; ``cancel()`` to stop."""
    names.check_name(name, "semaphore name")
    return session.backend.watch(session.key("semaphore", names.segment(name), "q") + "/", callback)
