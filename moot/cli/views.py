"""The views of the ``moot`` command: locks, semaphores, elections, groups,
one group's members, one election's leader.

Each view is written once and serves both ``moot COMMAND`` (printed once)
and ``moot watch`` (printed again on every change): it reads the backend
into JSON-able data, renders that data as a table or as JSON, and says which
names to watch and how, all through moot's public API.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import moot
from moot.cli.output import age, capabilities_text, elapsed, table
from moot.recipes import listing


class NotFound(Exception):
    """What the user asked about does not exist (exit status 3)."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class View(abc.ABC):
    """One thing the ``moot`` command shows, printed once or live."""

    #: ``moot watch VIEW`` and the ``"view"`` field of ``moot watch --json``.
    kind: ClassVar[str]
    #: What ``moot watch VIEW TARGET`` takes: ``None`` (nothing), or its name
    #: for messages; ``target_required``: whether it must be given.
    target: ClassVar[str | None] = None
    target_required: ClassVar[bool] = False

    def __init__(self, coord: moot.Coordinator, target: str = ""):
        self.coord = coord
        self.name = target

    @property
    def title(self) -> str:
        """The view's name in ``moot watch`` headers (with its target, if any)."""
        return f"{self.kind} {self.name}" if self.name else self.kind

    @abc.abstractmethod
    def read(self) -> Any:
        """The current state, read from the backend: JSON-able data."""

    @abc.abstractmethod
    def text(self, data: Any) -> str:
        """``data`` for people: a table, or one line saying there is nothing."""

    def json(self, data: Any) -> Any:
        """``data`` as ``moot COMMAND --json`` prints it."""
        return data

    def event(self, data: Any) -> dict[str, Any]:
        """``data`` as one object of ``moot watch --json`` (without its time)."""
        return {"view": self.kind, **self.json(data)}

    def missing(self, data: Any) -> bool:
        """True if what was asked for does not exist: ``moot COMMAND`` then
        exits 3 with ``text(data)`` as its message."""
        return False

    @abc.abstractmethod
    def names(self, data: Any) -> list[str]:
        """The locks, groups or elections in ``data`` whose changes to watch."""

    @abc.abstractmethod
    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        """Call ``wake()`` after changes to ``name`` until cancelled."""


class PrefixView(View):
    """A view of every lock, semaphore or election whose name starts with a prefix."""

    target = "PREFIX"

    def __init__(self, coord: moot.Coordinator, target: str = ""):
        super().__init__(coord)
        self.prefix = target

    @property
    def title(self) -> str:
        return f"{self.kind} {self.prefix}*" if self.prefix else self.kind


def waiter_entry(who: moot.Waiter, duration: str, now: float, mode: bool = False) -> dict[str, Any]:
    """A holder (``duration`` "held_for") or a waiter ("waiting_for") as JSON-able data."""
    entry = {"member": who.member, "token": who.token, **({"mode": who.mode} if mode else {}), "since": who.since,
             duration: elapsed(who.since, now)}
    return entry


class LocksView(PrefixView):
    """Every lock whose name starts with the prefix: its holders (one
    exclusive, or several shared) and its waiters in order, each with its
    member, token, mode, and how long it has held or waited. ``holder``,
    ``token``, ``mode``, ``since`` and ``held_for`` repeat the first holder."""

    kind = "locks"

    def read(self) -> list[dict[str, Any]]:
        infos = [info for info in self.coord.locks() if info.name.startswith(self.prefix)]
        now = time.time()

        def entry(who: moot.Waiter, duration: str) -> dict[str, Any]:
            return waiter_entry(who, duration, now, mode=True)

        return [{
            "name": info.name,
            "holder": info.holder,
            "token": info.token,
            "mode": info.mode,
            "since": info.since,
            "held_for": elapsed(info.since, now),
            "holders": [entry(h, "held_for") for h in info.holders],
            "waiters": [entry(w, "waiting_for") for w in info.waiters],
        } for info in infos]

    def text(self, data: list[dict[str, Any]]) -> str:
        if not data:
            what = f" whose name starts with {self.prefix!r}" if self.prefix else ""
            return f"no lock{what} is held or waited for in namespace {self.coord.namespace!r}"
        rows: list[list[object]] = []
        for lock in data:
            people = [(h, "holds", h["held_for"]) for h in lock["holders"]]
            people += [(w, f"waits #{place}", w["waiting_for"]) for place, w in enumerate(lock["waiters"], 1)]
            for row, (who, state, duration) in enumerate(people):
                rows.append([lock["name"] if row == 0 else "", who["member"], state, who["token"],
                             who["mode"], age(duration)])
        return table(["LOCK", "MEMBER", "STATE", "TOKEN", "MODE", "FOR"], rows)

    def event(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"view": self.kind, "prefix": self.prefix, "locks": data}

    def names(self, data: list[dict[str, Any]]) -> list[str]:
        return [lock["name"] for lock in data]

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        return self.coord.watch_lock(name, wake)


class GroupsView(View):
    """Every group of the namespace with the ids of its live members."""

    kind = "groups"

    def read(self) -> list[dict[str, Any]]:
        data = []
        for name in sorted(self.coord.groups()):
            try:
                members = sorted(self.coord.group(name).members())
            except moot.GroupNotFound:  # deleted since it was listed
                continue
            data.append({"name": name, "members": members})
        return data

    def text(self, data: list[dict[str, Any]]) -> str:
        if not data:
            return f"no group in namespace {self.coord.namespace!r}"
        return table(["GROUP", "MEMBERS"], [[g["name"], len(g["members"])] for g in data])

    def event(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"view": self.kind, "groups": data}

    def names(self, data: list[dict[str, Any]]) -> list[str]:
        return [group["name"] for group in data]

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        return watch_group(self.coord, name, wake)


class MembersView(View):
    """The live members of one group: capabilities, when they joined, when
    last seen alive (the data is None if there is no such group)."""

    kind = "group"
    target = "the group's NAME"
    target_required = True

    def read(self) -> list[dict[str, Any]] | None:
        group = self.coord.group(self.name)
        try:
            members = group.members()
        except moot.GroupNotFound:
            return None
        data = []
        for member_id in sorted(members):
            member = members[member_id]
            try:
                last_seen: float | None = group.member(member_id).last_seen
                up = True
            except moot.MemberNotFound:  # left since it was listed
                last_seen, up = None, False
            data.append({"member": member_id, "up": up, "capabilities": member.capabilities,
                         "joined_at": member.joined_at, "last_seen": last_seen})
        return data

    def missing(self, data: list[dict[str, Any]] | None) -> bool:
        return data is None

    def text(self, data: list[dict[str, Any]] | None) -> str:
        if data is None:
            return f"no group {self.name!r} in namespace {self.coord.namespace!r}"
        if not data:
            return f"group {self.name!r} has no members"
        now = time.time()
        rows = [[m["member"], "up" if m["up"] else "gone", f"{age(elapsed(m['joined_at'], now))} ago",
                 f"{age(elapsed(m['last_seen'], now))} ago" if m["last_seen"] else "-",
                 capabilities_text(m["capabilities"])] for m in data]
        return table(["MEMBER", "STATE", "JOINED", "LAST SEEN", "CAPABILITIES"], rows)

    def event(self, data: list[dict[str, Any]] | None) -> dict[str, Any]:
        return {"view": self.kind, "group": self.name, "exists": data is not None, "members": data or []}

    def names(self, data: list[dict[str, Any]] | None) -> list[str]:
        return [self.name]  # watched even before it exists: its first join shows at once

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        return watch_group(self.coord, name, wake)


def watch_group(coord: moot.Coordinator, name: str, wake: Callable[[], None]) -> Cancellable:
    """Call ``wake()`` after every join or leave of group ``name``."""
    return coord.group(name).watch(on_join=lambda _member: wake(), on_leave=lambda _member: wake())


class LeaderView(View):
    """The leader of one election and the candidates waiting behind it, in
    order (``leader`` is None when there is no candidate)."""

    kind = "leader"
    target = "the election's NAME"
    target_required = True

    def read(self) -> dict[str, Any]:
        candidates = self.coord.election(self.name).candidates()
        return {"election": self.name, "leader": candidates[0] if candidates else None,
                "candidates": candidates}

    def missing(self, data: dict[str, Any]) -> bool:
        return not data["candidates"]

    def text(self, data: dict[str, Any]) -> str:
        candidates = data["candidates"]
        if not candidates:
            return (f"election {self.name!r} has no leader (no candidates) in namespace "
                    f"{self.coord.namespace!r}")
        return table(["ELECTION", "LEADER", "WAITING"],
                     [[self.name, candidates[0], ", ".join(candidates[1:]) or "-"]])

    def names(self, data: dict[str, Any]) -> list[str]:
        return [self.name]

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        return LeaderWatch(self.coord.election(name), wake)


class LeaderWatch:
    """Calls ``wake()`` whenever the leader of ``election`` changes, until cancelled."""

    def __init__(self, election: moot.Election, wake: Callable[[], None]):
        self._election = election
        election.on_change(lambda _leader: wake())

    def cancel(self) -> None:
        self._election.stop_watching()


class SemaphoresView(PrefixView):
    """Every semaphore held or waited for whose name starts with the prefix:
    its stored limit, its holders and its waiters in order, each with its
    member, token and how long it has held or waited."""

    kind = "semaphores"

    def read(self) -> list[dict[str, Any]]:
        infos = [info for info in self.coord.semaphores() if info.name.startswith(self.prefix)]
        now = time.time()

        def entry(who: moot.Waiter, duration: str) -> dict[str, Any]:
            return waiter_entry(who, duration, now)

        return [{"name": info.name, "limit": info.limit,
                 "holders": [entry(h, "held_for") for h in info.holders],
                 "waiters": [entry(w, "waiting_for") for w in info.waiters]} for info in infos]

    def text(self, data: list[dict[str, Any]]) -> str:
        if not data:
            what = f" whose name starts with {self.prefix!r}" if self.prefix else ""
            return f"no semaphore{what} is held or waited for in namespace {self.coord.namespace!r}"
        rows: list[list[object]] = []
        for sem in data:
            people = [(h, "holds", h["held_for"]) for h in sem["holders"]]
            people += [(w, f"waits #{place}", w["waiting_for"]) for place, w in enumerate(sem["waiters"], 1)]
            for row, (who, state, duration) in enumerate(people):
                first = row == 0
                rows.append([sem["name"] if first else "", sem["limit"] if first else "", who["member"], state,
                             who["token"], age(duration)])
        return table(["SEMAPHORE", "LIMIT", "MEMBER", "STATE", "TOKEN", "FOR"], rows)

    def event(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"view": self.kind, "prefix": self.prefix, "semaphores": data}

    def names(self, data: list[dict[str, Any]]) -> list[str]:
        return [sem["name"] for sem in data]

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        with self.coord.session.bounded():
            return listing.watch_semaphore(self.coord.session, name, wake)


class ElectionsView(PrefixView):
    """Every election with a candidate whose name starts with the prefix:
    its leader with its fencing token and how long it has led, and every
    candidate in order (the leader first)."""

    kind = "elections"

    def read(self) -> list[dict[str, Any]]:
        with self.coord.session.bounded():
            infos = listing.elections(self.coord.session)
        now = time.time()
        return [{"name": info.name, "leader": info.leader, "token": info.token, "since": info.since,
                 "leading_for": elapsed(info.since, now),
                 "candidates": [c.member for c in info.candidates]}
                for info in infos if info.name.startswith(self.prefix)]

    def text(self, data: list[dict[str, Any]]) -> str:
        if not data:
            what = f" whose name starts with {self.prefix!r}" if self.prefix else ""
            return f"no election{what} has a candidate in namespace {self.coord.namespace!r}"
        return table(["ELECTION", "LEADER", "TOKEN", "FOR", "WAITING"],
                     [[e["name"], e["leader"], e["token"], age(e["leading_for"]),
                       ", ".join(e["candidates"][1:]) or "-"] for e in data])

    def event(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"view": self.kind, "prefix": self.prefix, "elections": data}

    def names(self, data: list[dict[str, Any]]) -> list[str]:
        return [election["name"] for election in data]

    def watch(self, name: str, wake: Callable[[], None]) -> Cancellable:
        with self.coord.session.bounded():
            return listing.watch_election(self.coord.session, name, wake)


#: ``moot watch VIEW``: every view by its kind.
VIEWS: dict[str, type[View]] = {view.kind: view for view in (
    LocksView, SemaphoresView, ElectionsView, GroupsView, MembersView, LeaderView)}
