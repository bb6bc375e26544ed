"""Service groups: which hosts run a service, as nova and ironic ask it.

``ServiceGroup(coord, topic)`` is the group ``topic`` (``coord.group(topic)``)
whose member ids are host names: ``join(host)`` lists ``host`` for as long as
this coordinator's session lives, so a crashed service drops out within the
session TTL (at once on file://). One coordinator may register several hosts,
under names other than its own ``member_id``.

Guarantees:

* ``join(host)`` raises MemberAlreadyJoined if another live session already
  registered ``host`` in ``topic``: one record per (topic, host). Joining
  again from the same coordinator replaces the record's data.
* A registration survives a lost session: when the coordinator opens a new
  session it registers its hosts again (as every group membership does).
* ``is_up(host)`` is True only if the backend lists ``host`` *and* every
  extra check agrees (nova also checks its own database record). The backend
  is asked first; the checks are called, in order, only for a listed host.
  An exception from a check propagates.
* ``leave(host)`` for a host of another session deletes that record at once
  (nova deleting a service). That session is not told: if its service is in
  fact still running it stays unlisted until it calls ``join()`` again or its
  session is renewed after a loss. Nothing else of that session is touched (an
  eviction would have cost it every lock it holds).
* ``leave()`` never raises for a record that is already gone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from moot import names
from moot.errors import GroupNotFound, MemberAlreadyJoined, MemberNotFound, NoLiveMember
from moot.realthreads import threading
from moot.recipes.group import Group
from moot.session import HasSession

Check = Callable[[str], bool]


class ServiceGroup:
    """The hosts running service ``topic``; see the module docstring.

    ``extra_checks``: callables ``check(host) -> bool`` that must all agree
    for a host to count as up, in ``is_up()``, ``get_all()`` and ``pick()``.
    ``group`` is the underlying :class:`~moot.recipes.group.Group`, for
    watches and each host's data (``group.member(host).capabilities``).
    """

    def __init__(self, coord: HasSession, topic: str, extra_checks: Iterable[Check] = ()):
        self.topic = names.check_name(topic, "topic")
        self._session = coord.session
        self.group = Group(self._session, topic)
        self._checks = tuple(extra_checks)
        self._joined: dict[str, Group] = {}
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"<moot.ServiceGroup {self.topic!r} joined={sorted(self._joined)}>"

    def join(self, host: str | None = None, data: Any = None) -> None:
        """Register ``host`` (default: this coordinator's member_id) as running
        this service, with JSON-able or bytes ``data``."""
        host = names.check_name(self._session.member_id if host is None else host, "host")
        with self._mutex:
            membership = self._joined.get(host) or Group(self._session, self.topic, member_id=host)
            try:
                membership.join(data)
            except MemberAlreadyJoined:
                raise MemberAlreadyJoined(
                    f"host {host!r} is already registered in service group {self.topic!r} by another "
                    f"live session; one service per (topic, host)") from None
            self._joined[host] = membership

    def leave(self, host: str | None = None) -> bool:
        """Unregister ``host``; with no host, every host this object joined.

        True if a record was removed. ``host`` may belong to another session
        (a deleted service): its record is deleted all the same."""
        with self._mutex:
            if host is None:
                mine, self._joined = list(self._joined.values()), {}
                return any([membership.leave() for membership in mine])
            names.check_name(host, "host")
            membership = self._joined.pop(host, None)
        if membership is not None:
            return membership.leave()
        return self.group.remove(host)

    def is_up(self, host: str, check: Check | None = None) -> bool:
        """True if ``host`` is listed by the backend and every extra check
        (and ``check``, if given) returns True for it."""
        if not self.group.is_up(names.check_name(host, "host")):
            return False
        return self._checks_pass(host) and (check is None or bool(check(host)))

    def last_seen(self, host: str) -> float | None:
        """Wall-clock time the host's session was last confirmed alive; None
        if the host is not listed."""
        try:
            return self.group.member(names.check_name(host, "host")).last_seen
        except MemberNotFound:
            return None

    def get_all(self) -> list[str]:
        """The hosts that are up (listed, and passing the extra checks), sorted."""
        try:
            listed = self.group.members()
        except GroupNotFound:
            return []
        return [host for host in sorted(listed) if self._checks_pass(host)]

    def pick(self) -> str:
        """A host that is up, chosen at random; NoLiveMember if there is none."""
        hosts = self.get_all()
        if not hosts:
            raise NoLiveMember(f"no live service in group {self.topic!r}: no host joined it, "
                               f"or none passes the extra checks")
        return random.choice(hosts)

    def _checks_pass(self, host: str) -> bool:
        return all(check(host) for check in self._checks)
