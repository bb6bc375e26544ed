"""Group membership with liveness, written once on the primitives.

A member is an ephemeral key bound to its coordinator's session: it is listed
exactly while that session lives, so a crashed member disappears within the
session TTL (at once on file://). A coordinator that loses its session joins
its groups again on the next one, with the same capabilities.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moot import names, values
from moot.backends.base import Entry
from moot.errors import (
    GroupNotEmpty,
    GroupNotFound,
    MemberAlreadyJoined,
    MemberNotFound,
    SessionExpired,
)
from moot.realthreads import threading
from moot.session import Session, within_timeout


@dataclass(frozen=True)
class Member:
    """A live member of a group.

    ``last_seen`` is when its session was last confirmed alive by the engine
    (for a listed member: at most one TTL ago, usually far less).
    ``capabilities`` is what the member joined with, or a
    :class:`moot.RawValue` if its record cannot be read (written by another,
    broken client)."""

    member_id: str
    capabilities: Any
    joined_at: float
    last_seen: float


def _encode(capabilities: Any, joined_at: float) -> bytes:
    """The member record; InvalidArgument (before any I/O) for capabilities
    that :mod:`moot.values` refuses."""
    return values.encode_member(capabilities, joined_at)


def _decode(member_id: str, entry: Entry, last_seen: float) -> Member:
    """Never raises: a record another client wrote badly gives capabilities
    that are a :class:`moot.values.RawValue` (see :func:`moot.values.decode_member`)."""
    capabilities, joined_at = values.decode_member(entry.value)
    return Member(member_id, capabilities, joined_at, last_seen)


class GroupWatch:
    """A registered group watch; ``cancel()`` stops its callbacks.

    Callbacks run one at a time on the coordinator's callback thread, in
    order: for each change seen, the members that left (by member id), then
    those that joined (by member id). Both get a :class:`Member`: the member
    that left as it was last seen (its ``last_seen`` is when this watch last
    saw it listed). A member whose record now belongs to another session
    (it lost its session and joined again) is reported as leaving, then
    joining."""

    def __init__(self, group: Group, on_join: Callable[[Member], None] | None,
                 on_leave: Callable[[Member], None] | None, existing: bool = False):
        self._group = group
        self._on_join = on_join
        self._on_leave = on_leave
        self._known = {} if existing else group._member_entries()
        self._known_at = time.time()
        self._cancelled = False
        session = group._session
        self._watch = session.backend.watch(group._members_prefix, lambda: session.run_callback(self._refresh))
        session.run_callback(self._refresh)  # a change between the snapshot and the watch is not lost

    def _refresh(self) -> None:
        # Only ever run on the coordinator's callback thread, one call after the other.
        if self._cancelled:
            return
        before, seen_at = self._known, self._known_at
        current = self._group._member_entries()
        now = time.time()
        left = sorted(m for m, e in before.items() if m not in current or current[m].owner != e.owner)
        joined = sorted(m for m, e in current.items() if m not in before or before[m].owner != e.owner)
        self._known, self._known_at = current, now
        for member_id in left:
            if self._on_leave is not None:
                self._on_leave(_decode(member_id, before[member_id], seen_at))
        for member_id in joined:
            if self._on_join is not None:
                self._on_join(_decode(member_id, current[member_id], now))

    def cancel(self) -> None:
        """No callback of a change seen after this call. It does not wait for
        a refresh in progress (its callbacks may still run): the refresh
        reads the group on the callback thread, a green thread under
        eventlet, where waiting for it here would block the very hub it
        needs to finish."""
        self._cancelled = True
        self._watch.cancel()


class Group:
    """The group ``name``; see the module docstring."""

    def __init__(self, session: Session, name: str, member_id: str | None = None):
        self.name = names.check_name(name, "group name")
        #: The id this object joins as: the coordinator's member_id unless given
        #: (a service registering under its host name).
        self.member_id = session.member_id if member_id is None else names.check_name(member_id, "member_id")
        self._session = session
        base = session.key("group", names.segment(self.name))
        self._meta = base + "/meta"
        self._members_prefix = base + "/members/"
        self._my_key = self._members_prefix + names.segment(self.member_id)
        self._capabilities: Any = None
        self._joined = False
        self._version: int | None = None  # of this object's record, as last written
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"<moot.Group {self.name!r}{' joined' if self._joined else ''}>"

    @property
    def joined(self) -> bool:
        """True while this coordinator is a member (and wants to stay one)."""
        return self._joined

    @within_timeout
    def create(self) -> bool:
        """Create the group if it does not exist; True if this call created it."""
        self._session.check_open()
        return self._session.backend.create(self._meta, json.dumps({"created": time.time()}).encode()) is not None

    @within_timeout
    def join(self, capabilities: Any = None) -> None:
        """Join (creating the group if needed), with JSON-able or bytes capabilities.

        Joining again from the same coordinator updates the capabilities.
        Raises MemberAlreadyJoined if another live session joined under the
        same member id."""
        value = _encode(capabilities, time.time())
        self.create()
        with self._mutex:
            if self._create_member(value) is None:
                current = self._session.backend.get(self._my_key)
                if current is None or current.owner != self._session.id:
                    raise MemberAlreadyJoined(
                        f"member {self.member_id!r} is already in group {self.name!r} through "
                        f"another live session; give each process its own member_id")
                updated = self._session.backend.compare_and_set(self._my_key, value, current.version)
                self._version = None if updated is None else updated.version
            self._capabilities = capabilities
            self._joined = True
        self._session.bind(self)

    def _create_member(self, value: bytes) -> Entry | None:
        created = self._session.backend.create(self._my_key, value, ephemeral=True)
        if created is not None:
            self._version = created.version
        return created

    @within_timeout
    def leave(self) -> bool:
        """Leave the group; True if this coordinator was a member. Never
        raises for a group or membership that is already gone."""
        with self._mutex:
            was, self._joined = self._joined, False
            version, self._version = self._version, None
        self._session.unbind(self)
        if version is None:  # joined through another object of this session, or not at all
            try:
                current = self._session.backend.get(self._my_key)
            except SessionExpired:
                return False
            if current is None or current.owner != self._session.id:
                return False  # nothing of this session's to leave (remove() deletes others' records)
            version = current.version
        # The one removal path: an unconfirmed removal is retried by the
        # heartbeat, at this version only (a later join makes a new one).
        deleted = self._session.delete_entry(self._my_key, version)
        return was and deleted

    @within_timeout
    def remove(self, member_id: str) -> bool:
        """Delete ``member_id``'s record whichever session owns it (a service
        that was deleted for good); True if it existed. A process still
        running under that id stays unlisted until it joins again or renews
        its session."""
        names.check_name(member_id, "member_id")
        self._session.check_open()
        return self._session.backend.delete(self._members_prefix + names.segment(member_id))

    @within_timeout
    def update_capabilities(self, capabilities: Any) -> None:
        """Replace this member's capabilities; MemberNotFound if not joined."""
        _encode(capabilities, 0.0)  # refused before any I/O
        with self._mutex:
            for _ in range(10):
                current = self._session.backend.get(self._my_key)
                if current is None or not self._joined:
                    raise MemberNotFound(f"{self.member_id!r} is not in group {self.name!r}; join() first")
                joined_at = values.decode_member(current.value)[1] or time.time()
                updated = self._session.backend.compare_and_set(self._my_key, _encode(capabilities, joined_at),
                                                                current.version)
                if updated is not None:
                    self._capabilities, self._version = capabilities, updated.version
                    return
        raise MemberNotFound(f"{self.member_id!r} kept changing in group {self.name!r}")

    def _member_entries(self) -> dict[str, Entry]:
        prefix = self._members_prefix
        return {names.unsegment(e.key[len(prefix):]): e
                for e in self._session.backend.list(prefix) if "/" not in e.key[len(prefix):]}

    @within_timeout
    def exists(self) -> bool:
        return self._session.backend.get(self._meta) is not None

    @within_timeout
    def members(self) -> dict[str, Member]:
        """Every live member: ``{member_id: Member}``. GroupNotFound if the
        group was never created (or was deleted)."""
        self._session.check_open()
        entries = self._member_entries()
        if not entries and not self.exists():
            raise GroupNotFound(f"group {self.name!r} does not exist; join() creates it")
        now = time.time()
        return {member_id: _decode(member_id, entry, now) for member_id, entry in entries.items()}

    @within_timeout
    def member_ids(self) -> set[str]:
        """The ids of every live member, without their capabilities: the
        cheapest listing (on ZooKeeper and etcd the values are not even
        read). GroupNotFound if the group was never created (or was deleted)."""
        self._session.check_open()
        listed = self._session.backend.names(self._members_prefix)
        if not listed and not self.exists():
            raise GroupNotFound(f"group {self.name!r} does not exist; join() creates it")
        return names.unsegment_all(listed)

    @within_timeout
    def member(self, member_id: str) -> Member:
        """One live member; MemberNotFound if it is not (or no longer) in the group."""
        names.check_name(member_id, "member_id")
        entry = self._session.backend.get(self._members_prefix + names.segment(member_id))
        if entry is None:
            raise MemberNotFound(f"{member_id!r} is not in group {self.name!r}")
        last_seen = self._session.backend.session_last_seen(entry.owner) if entry.owner else None
        return _decode(member_id, entry, last_seen or time.time())

    @within_timeout
    def is_up(self, member_id: str) -> bool:
        """True if ``member_id`` is a live member of this group."""
        names.check_name(member_id, "member_id")
        return self._session.backend.get(self._members_prefix + names.segment(member_id)) is not None

    @within_timeout
    def watch(self, on_join: Callable[[Member], None] | None = None,
              on_leave: Callable[[Member], None] | None = None, existing: bool = False) -> GroupWatch:
        """Call ``on_join(member)`` / ``on_leave(member)`` for changes after
        this call, on the coordinator's callback thread, in the order
        :class:`GroupWatch` states. With ``existing``, ``on_join`` is first
        called for every member already in the group (so a view built from
        the callbacks alone misses nobody)."""
        self._session.check_open()
        return GroupWatch(self, on_join, on_leave, existing)

    @within_timeout
    def delete(self) -> None:
        """Delete the group; GroupNotEmpty if it has members, GroupNotFound if absent."""
        self._session.check_open()
        if self._member_entries():
            raise GroupNotEmpty(f"group {self.name!r} still has members; they must leave first")
        if not self._session.backend.delete(self._meta):
            raise GroupNotFound(f"group {self.name!r} does not exist")

    # -- session events ---------------------------------------------------
    def session_lost(self) -> None:
        """Membership died with the session; it is restored on the next one."""

    def session_renewed(self) -> None:
        """Join again on the new session. A record left by one of this
        coordinator's given-up sessions (the engine may keep it for up to a
        TTL) is replaced; one held by another live session is retried on
        every heartbeat until that session ends (raising tells the
        coordinator to try again)."""
        with self._mutex:
            if not self._joined:
                return
            backend = self._session.backend
            backend.create(self._meta, json.dumps({"created": time.time()}).encode())
            value = _encode(self._capabilities, time.time())
            if self._create_member(value) is not None:
                return
            current = backend.get(self._my_key)
            if current is not None and current.owner == self._session.id:
                return
            if current is not None and self._session.is_own_past_session(current.owner):
                backend.delete(self._my_key, current.version)
                if self._create_member(value) is not None:
                    return
            raise MemberAlreadyJoined(f"cannot join {self.name!r} again as {self.member_id!r} yet: another "
                                      "session still holds that member id; retrying on every heartbeat")

    def session_closing(self) -> None:
        self.leave()


def all_groups(session: Session) -> list[str]:
    root = session.key("group") + "/"
    return sorted(names.unsegment(e.key[len(root):-len("/meta")])
                  for e in session.backend.list(root) if e.key.endswith("/meta")
                  and e.key[len(root):].count("/") == 1)
