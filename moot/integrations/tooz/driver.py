"""The tooz ``CoordinationDriver`` on one moot coordinator.

``tooz.coordination.get_coordinator("moot+redis://host:6379?ttl=10", b"me")``
loads :class:`MootDriver` (through the ``tooz.backends`` entry points); its
``start()`` is ``moot.connect()``, and every tooz call is a call of moot's
public API on that coordinator.

Guarantees (what tooz callers rely on):

* Group and member ids may be ``bytes`` or ``str``: ``b"g"`` and ``"g"``
  name the same group (moot names are text; bytes must be UTF-8). Ids come
  back as ``bytes`` (``get_groups``, ``get_members``, events, leaders).
* Asynchronous calls (``create_group``, ``join_group``, ``get_members``...)
  run on one worker thread, in submission order: ``create_group(g)`` then
  ``join_group(g)`` without waiting for the first result works. ``get(timeout)``
  returns, raises the tooz error, or raises ``OperationTimedOut``.
* Once a call's result is in, every other client sees its effect (a group
  created, a member joined): no cache stands between a call and the engine.
* ``run_watchers()`` reads the membership of each watched group afresh (one
  listing per group), so a join or leave completed before the call is
  reported by it; then it stands for leadership (one non-blocking attempt)
  in each group with an elected-as-leader hook this coordinator does not
  already lead. Leadership is ``coord.election(group)``: fenced, released
  by ``stand_down_group_leader()``, by ``stop()``, or with the session.
* ``heartbeat()`` makes no round trip and ``requires_beating`` is False:
  moot's own heartbeat thread keeps the session alive; tooz's heart thread
  is not needed (``start(start_heart=True)`` starts none).
* Errors are tooz's classes (see :mod:`moot.integrations.tooz.errors`).

Leaving: a member that joined through this driver leaves its own
membership. ``leave_group()`` from a coordinator that did not join removes
the record of this member id whoever holds it, as tooz's drivers do (a
restarted service clearing its predecessor's membership).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import tooz
from tooz import coordination, locking

import moot
from moot.integrations.tooz.errors import serializing, translated
from moot.integrations.tooz.lock import MootLock

T = TypeVar("T")
Id = bytes | str

PREFIX = "moot+"


def as_bytes(value: Id) -> bytes:
    """A tooz id as bytes (a str is encoded as UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise tooz.ToozError(f"an id must be bytes or str, not {type(value).__name__}")


def moot_url(parsed_url: Any) -> str:
    """The moot URL behind a ``moot+<scheme>://...`` tooz URL, without its
    query (tooz hands the options over separately)."""
    scheme = str(parsed_url.scheme)
    if not scheme.startswith(PREFIX):
        raise tooz.ToozError(f"a moot URL for tooz starts with {PREFIX}<scheme>://, not {scheme}://")
    return f"{scheme[len(PREFIX):]}://{parsed_url.netloc}{parsed_url.path}"


def moot_options(options: dict[str, Any]) -> dict[str, Any]:
    """tooz's options (lists of query values, keyword values wrapped in
    lists) as moot's keywords: the last value of each."""
    return {key: value[-1] if isinstance(value, list | tuple) and value else value
            for key, value in options.items()}


class MootDriver(coordination.CoordinationDriverCachedRunWatchers):
    """A tooz coordinator on moot; see the module docstring. Subclasses
    (one per moot backend, :mod:`moot.integrations.tooz.kinds`) state the
    ``CHARACTERISTICS`` of their engine."""

    def __init__(self, member_id: Id, parsed_url: Any, options: dict[str, Any]):
        member = as_bytes(member_id)
        super().__init__(member, parsed_url, options)
        self.requires_beating = False  # moot's heartbeat thread keeps the session
        self._url = moot_url(parsed_url)
        self._options = moot_options(options)
        self._member_text = self.text(member, "member_id")
        self._state = threading.Lock()  # guards the fields below
        self._coord: moot.Coordinator | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._groups: dict[bytes, moot.Group] = {}
        self._elections: dict[bytes, moot.Election] = {}

    def __repr__(self) -> str:
        coord = self._coord
        where = coord.url if coord is not None else f"{self._url.split('://', 1)[0]}://..."
        return f"<moot tooz driver {where} member_id={self._member_text!r}>"

    @staticmethod
    def text(value: Id, what: str) -> str:
        """A tooz id as the text moot names it with; ToozError if not UTF-8."""
        raw = as_bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise tooz.ToozError(f"{what} {raw!r} is not UTF-8 text; moot names are text") from None

    # -- lifecycle ----------------------------------------------------------
    def coordinator(self) -> moot.Coordinator:
        """The moot coordinator behind this driver (for moot's own API:
        ``lock_info``, fencing tokens, ``stats()``...); ToozError if not started."""
        coord = self._coord
        if coord is None:
            raise tooz.ToozError("the coordinator is not started; call start() first")
        return coord

    def _start(self) -> None:
        try:
            coord = moot.connect(self._url, member_id=self._member_text, **self._options)
        except moot.ConfigurationError as e:
            raise tooz.ToozError(f"{PREFIX}{self._url.split('://', 1)[0]}: {e}", cause=e) from e
        except moot.DriverNotInstalled as e:
            raise tooz.ToozError(str(e), cause=e) from e
        except (moot.ConnectionLost, moot.SessionExpired) as e:
            raise coordination.ToozConnectionError(str(e), cause=e) from e
        with self._state:
            self._coord = coord
            self._executor = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="moot-tooz")
            self._groups.clear()
            self._elections.clear()

    def _stop(self) -> None:
        with self._state:
            coord, self._coord = self._coord, None
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        if coord is not None:
            coord.close()

    def heartbeat(self) -> float:
        """Seconds until calling again is useful; no round trip (moot's
        heartbeat thread renews the session)."""
        return self.coordinator().heartbeat_interval

    # -- plumbing -----------------------------------------------------------
    def _submit(self, call: Callable[[], T]) -> coordination.CoordAsyncResult[T]:
        """Run ``call`` on the worker thread, after every call submitted before."""
        with self._state:
            executor = self._executor
            if executor is None:
                raise tooz.ToozError("the coordinator is not started; call start() first")
            return coordination.CoordinatorResult(executor.submit(call))

    def _group(self, group_id: bytes) -> moot.Group:
        coord = self.coordinator()
        with self._state:
            group = self._groups.get(group_id)
            if group is None:
                with translated(group_id):
                    group = self._groups[group_id] = coord.group(self.text(group_id, "group_id"))
            return group

    def _election(self, group_id: bytes) -> moot.Election:
        coord = self.coordinator()
        with self._state:
            election = self._elections.get(group_id)
            if election is None:
                with translated(group_id):
                    election = self._elections[group_id] = coord.election(self.text(group_id, "group_id"))
            return election

    def _member(self, group_id: bytes, member_id: bytes) -> moot.Member:
        """A live member; MemberNotJoined, or GroupNotCreated if no group."""
        group = self._group(group_id)
        with translated(group_id, member_id):
            try:
                return group.member(self.text(member_id, "member_id"))
            except moot.MemberNotFound:
                if not group.exists():
                    raise coordination.GroupNotCreated(group_id) from None
                raise

    # -- groups -------------------------------------------------------------
    def create_group(self, group_id: Id) -> coordination.CoordAsyncResult[None]:
        gid = as_bytes(group_id)

        def run() -> None:
            group = self._group(gid)
            with translated(gid):
                if not group.create():
                    raise coordination.GroupAlreadyExist(gid)

        return self._submit(run)

    def get_groups(self) -> coordination.CoordAsyncResult[list[bytes]]:
        def run() -> list[bytes]:
            with translated():
                return [name.encode("utf-8") for name in self.coordinator().groups()]

        return self._submit(run)

    def join_group(self, group_id: Id, capabilities: Any = None) -> coordination.CoordAsyncResult[None]:
        gid = as_bytes(group_id)

        def run() -> None:
            group = self._group(gid)
            with translated(gid, self._member_id):
                if group.joined:
                    raise coordination.MemberAlreadyExist(gid, self._member_id)
                if not group.exists():
                    raise coordination.GroupNotCreated(gid)
                with serializing():
                    group.join(capabilities)
            self._joined_groups.add(gid)

        return self._submit(run)

    def leave_group(self, group_id: Id) -> coordination.CoordAsyncResult[None]:
        gid = as_bytes(group_id)

        def run() -> None:
            group = self._group(gid)
            with translated(gid, self._member_id):
                left = group.leave() if group.joined else group.remove(self._member_text)
                self._joined_groups.discard(gid)
                if not left:
                    if not group.exists():
                        raise coordination.GroupNotCreated(gid)
                    raise coordination.MemberNotJoined(gid, self._member_id)

        return self._submit(run)

    def delete_group(self, group_id: Id) -> coordination.CoordAsyncResult[None]:
        gid = as_bytes(group_id)

        def run() -> None:
            group = self._group(gid)
            with translated(gid):
                group.delete()

        return self._submit(run)

    def get_members(self, group_id: Id) -> coordination.CoordAsyncResult[set[bytes]]:
        gid = as_bytes(group_id)

        def run() -> set[bytes]:
            group = self._group(gid)
            with translated(gid):
                return {member_id.encode("utf-8") for member_id in group.member_ids()}

        return self._submit(run)

    def get_members_with_capabilities(self, group_id: Id) -> coordination.CoordAsyncResult[dict[bytes, Any]]:
        gid = as_bytes(group_id)

        def run() -> dict[bytes, Any]:
            group = self._group(gid)
            with translated(gid):
                return {member_id.encode("utf-8"): member.capabilities
                        for member_id, member in group.members().items()}

        return self._submit(run)

    def get_member_capabilities(self, group_id: Id, member_id: Id) -> coordination.CoordAsyncResult[Any]:
        gid, mid = as_bytes(group_id), as_bytes(member_id)
        return self._submit(lambda: self._member(gid, mid).capabilities)

    def get_member_info(self, group_id: Id, member_id: Id) -> coordination.CoordAsyncResult[dict[str, Any]]:
        """``capabilities``, ``created_at`` (when it joined) and ``last_seen``
        (when its session was last confirmed alive), as UTC datetimes."""
        gid, mid = as_bytes(group_id), as_bytes(member_id)

        def run() -> dict[str, Any]:
            member = self._member(gid, mid)
            return {"capabilities": member.capabilities,
                    "created_at": datetime.datetime.fromtimestamp(member.joined_at, datetime.UTC),
                    "last_seen": datetime.datetime.fromtimestamp(member.last_seen, datetime.UTC)}

        return self._submit(run)

    def update_capabilities(self, group_id: Id, capabilities: Any) -> coordination.CoordAsyncResult[None]:
        gid = as_bytes(group_id)

        def run() -> None:
            group = self._group(gid)
            with translated(gid, self._member_id), serializing():
                group.update_capabilities(capabilities)

        return self._submit(run)

    # -- watchers (ids normalised to bytes, then tooz's bookkeeping) ----------
    def watch_join_group(self, group_id: Id, callback: Any) -> None:
        super().watch_join_group(as_bytes(group_id), callback)

    def unwatch_join_group(self, group_id: Id, callback: Any) -> None:
        super().unwatch_join_group(as_bytes(group_id), callback)

    def watch_leave_group(self, group_id: Id, callback: Any) -> None:
        super().watch_leave_group(as_bytes(group_id), callback)

    def unwatch_leave_group(self, group_id: Id, callback: Any) -> None:
        super().unwatch_leave_group(as_bytes(group_id), callback)

    def watch_elected_as_leader(self, group_id: Id, callback: Any) -> None:
        super().watch_elected_as_leader(as_bytes(group_id), callback)

    def unwatch_elected_as_leader(self, group_id: Id, callback: Any) -> None:
        super().unwatch_elected_as_leader(as_bytes(group_id), callback)

    def run_watchers(self, timeout: float | None = None) -> list[Any]:
        """Run the join/leave hooks of what changed since the last run, then
        stand for leadership where an elected hook asks for it; returns
        the hooks' results."""
        results = super().run_watchers(timeout)
        for gid, hooks in list(self._hooks_elected_leader.items()):
            election = self._election(gid)
            if election.is_leader:
                continue
            with translated(gid):
                elected = election.campaign(blocking=False)
            if elected:
                results.extend(hooks.run(coordination.LeaderElected(gid, self._member_id)))
        return results

    # -- leadership -----------------------------------------------------------
    def get_leader(self, group_id: Id) -> coordination.CoordAsyncResult[bytes | None]:  # type: ignore[override]
        gid = as_bytes(group_id)

        def run() -> bytes | None:
            election = self._election(gid)
            with translated(gid):
                leader = election.leader()
            return None if leader is None else leader.encode("utf-8")

        return self._submit(run)

    def stand_down_group_leader(self, group_id: Id) -> bool:
        """Give up leadership of the group; True if this coordinator led it."""
        with self._state:
            election = self._elections.get(as_bytes(group_id))
        if election is None:
            return False
        with translated(as_bytes(group_id)):
            return election.resign()

    # -- locks ----------------------------------------------------------------
    def get_lock(self, name: Id) -> locking.Lock:
        return MootLock(self, name)
