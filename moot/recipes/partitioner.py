"""Consistent hashing of keys onto the live members of a group.

A :class:`Partitioner` spreads keys (resources, nodes, volumes...) over the
members of a group: ``owners(key)`` names the ``replicas`` members in charge
of ``key``, ``owns(key)`` tells whether this coordinator is one of them.

Guarantees:

* The ring depends only on the member ids and their weights (a stable hash,
  BLAKE2b, never Python's salted ``hash()``): every process that sees the same
  members computes the same owners for every key.
* ``owners(key)`` lists ``replicas`` distinct members, the primary first; fewer
  when the group has fewer members with a positive weight; ``[]`` when empty.
* Minimal movement: when one member joins or leaves, the only keys whose
  owners change are those that member gains or loses (about 1/N of the keys
  with N members); a key's other owners keep their order.
* A member's weight is ``capabilities["weight"]`` (a number >= 0, default 1):
  weight 2 gets twice the virtual nodes, so about twice the keys; weight 0
  owns nothing (a draining member). The weight is read when the member joins.

Consistency: ``owners()``, ``owns()`` and ``members()`` read a ring cached in
this process, with no round trip; a group watch keeps it up to date. It lags
the backend by one watch notification, so while the membership changes two
members may briefly both believe they own a key, or neither. The ring spreads
work; for work that must never run twice at once, also take
``coord.lock(key)``. ``refresh()`` re-reads the membership at once.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import logging
import math
from collections.abc import Callable, Mapping

from moot.errors import GroupNotFound, InvalidArgument
from moot.realthreads import threading
from moot.recipes.group import Group, Member
from moot.session import Session

log = logging.getLogger("moot.partitioner")

#: Virtual nodes per unit of weight: enough for each member's share of the
#: keys to stay within about 10% of its fair share.
DEFAULT_VIRTUAL_NODES = 100

Key = str | bytes


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _key_bytes(key: Key) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes | bytearray):
        return bytes(key)
    raise InvalidArgument(f"a partitioner key must be str or bytes, not {type(key).__name__}")


def member_weight(member: Member) -> float:
    """``member.capabilities["weight"]`` if it is a number >= 0, else 1."""
    capabilities = member.capabilities
    if not isinstance(capabilities, Mapping) or "weight" not in capabilities:
        return 1.0
    weight = capabilities["weight"]
    if isinstance(weight, int | float) and not isinstance(weight, bool) and math.isfinite(weight) and weight >= 0:
        return float(weight)
    log.warning("moot: member %r has weight %r, not a number >= 0; using 1", member.member_id, weight)
    return 1.0


class HashRing:
    """An immutable consistent hash ring over weighted members.

    Each member gets ``round(weight * virtual_nodes)`` points on a 64-bit
    ring; a key belongs to the members of the first points at or after its
    own hash, going round."""

    def __init__(self, weights: Mapping[str, float], virtual_nodes: int = DEFAULT_VIRTUAL_NODES):
        points = sorted(
            (_point(f"{member}\x00{index}".encode()), member)
            for member, weight in weights.items()
            for index in range(round(weight * virtual_nodes))
        )
        self._hashes = [point for point, _ in points]
        self._members = [member for _, member in points]
        self._size = len(set(self._members))

    def owners(self, key: Key, replicas: int = 1) -> list[str]:
        """The ``replicas`` distinct members owning ``key``, primary first."""
        wanted = min(replicas, self._size)
        found: list[str] = []
        if not wanted:
            return found
        count = len(self._hashes)
        start = bisect.bisect_left(self._hashes, _point(_key_bytes(key)))
        for step in range(count):
            member = self._members[(start + step) % count]
            if member not in found:
                found.append(member)
                if len(found) == wanted:
                    break
        return found


class Partitioner:
    """A consistent hash ring over the live members of group ``group_name``;
    see the module docstring.

    Creating a partitioner does not join the group: members join it as usual
    (``coord.group(name).join({"weight": 2})`` or ``partitioner.group.join()``).
    A coordinator that is not a member can still ask who owns what."""

    def __init__(self, session: Session, group_name: str, replicas: int = 1,
                 virtual_nodes: int = DEFAULT_VIRTUAL_NODES):
        for what, value in (("replicas", replicas), ("virtual_nodes", virtual_nodes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{what} must be an int >= 1, not {value!r}")
        session.check_open()
        self.group = Group(session, group_name)
        self.replicas = replicas
        self._session = session
        self._virtual_nodes = virtual_nodes
        self._mutex = threading.Lock()  # guards the cached state below
        self._updating = threading.Lock()  # one update at a time, in order
        self._weights: dict[str, float] = {}
        self._ring: HashRing | None = None
        self._callbacks: list[Callable[[frozenset[str]], None]] = []
        # Watch first, then read: a change in between is reported by the watch.
        self._watch = self.group.watch(on_join=self._on_join, on_leave=self._on_leave)
        try:
            self.refresh()
        except BaseException:
            self._watch.cancel()
            raise

    def __repr__(self) -> str:
        return f"<moot.Partitioner {self.group.name!r} members={len(self._weights)} replicas={self.replicas}>"

    def owners(self, key: Key) -> list[str]:
        """The members owning ``key`` (str or bytes; a str is hashed as its
        UTF-8 bytes), primary first; no round trip."""
        with self._mutex:
            if self._ring is None:
                self._ring = HashRing(self._weights, self._virtual_nodes)
            ring = self._ring
        return ring.owners(key, self.replicas)

    def owns(self, key: Key) -> bool:
        """True if this coordinator's ``member_id`` is among the owners of
        ``key`` (for a ring of hosts joined through a ServiceGroup, test
        ``host in owners(key)``)."""
        return self._session.member_id in self.owners(key)

    def members(self) -> frozenset[str]:
        """The member ids the ring is made of (as last seen; no round trip)."""
        with self._mutex:
            return frozenset(self._weights)

    def on_rebalance(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Call ``callback(members)`` with the new member set after every
        change of the ring (a member joined or left), on the coordinator's
        callback thread, in the order of the changes."""
        with self._mutex:
            self._callbacks.append(callback)

    def refresh(self) -> frozenset[str]:
        """Re-read the membership now (one round trip) and return it."""
        with self._updating:  # one update at a time; a stale one is corrected by the watch's next event
            try:
                current = self.group.members()
            except GroupNotFound:
                current = {}
            return self._replace({member_id: member_weight(m) for member_id, m in current.items()})

    def close(self) -> None:
        """Stop following the group (the cached ring stays as it was)."""
        self._watch.cancel()

    # -- watch events (on the callback thread) ------------------------------
    def _on_join(self, member: Member) -> None:
        with self._updating:
            self._replace({**self._weights, member.member_id: member_weight(member)})

    def _on_leave(self, member: Member) -> None:
        with self._updating:
            self._replace({m: w for m, w in self._weights.items() if m != member.member_id})

    def _replace(self, weights: dict[str, float]) -> frozenset[str]:
        """Install new weights (``self._updating`` held); if the ring changed,
        queue the rebalance callbacks. Returns the member set."""
        members = frozenset(weights)
        with self._mutex:
            if weights == self._weights:
                return members
            self._weights = weights
            self._ring = None
            for callback in self._callbacks:
                self._session.run_callback(functools.partial(callback, members))
        return members
