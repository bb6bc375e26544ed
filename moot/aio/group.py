"""Async groups: :class:`moot.Group`'s calls as coroutines, and its watch as
an async iterator of :class:`GroupEvent` (or callbacks run on the loop)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from moot.aio.driver import Driver
from moot.aio.notices import OnLoop
from moot.recipes.group import Group, GroupWatch, Member

JOINED = "joined"
LEFT = "left"


@dataclasses.dataclass(frozen=True)
class GroupEvent:
    """``member`` :data:`JOINED` or :data:`LEFT` (then: as last seen)."""

    kind: str
    member: Member

    @property
    def member_id(self) -> str:
        return self.member.member_id


class AsyncGroupWatch:
    """The changes of a group's membership after the watch started.

    ``async for event in group.watch():`` starts it on the first iteration;
    ``watch = await group.watch(on_join=…, on_leave=…)`` starts it at once
    and runs the callbacks on the loop instead. Either way, in order, and
    ``await watch.cancel()`` (or leaving ``async with``) stops it; an
    iterated watch also stops once no longer referenced (an iteration left
    with ``break``), a watch with callbacks only when cancelled."""

    def __init__(self, group: AsyncGroup, on_join: Callable[[Member], object] | None,
                 on_leave: Callable[[Member], object] | None, existing: bool):
        self._group = group
        self._on_join, self._on_leave = on_join, on_leave
        self._existing = existing
        self._events: asyncio.Queue[GroupEvent] = asyncio.Queue()
        self._sync: GroupWatch | None = None
        self._starting: asyncio.Future[None] | None = None

    async def _start(self) -> AsyncGroupWatch:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._register())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        except Exception:
            if self._starting is starting:
                self._starting = None  # the next use tries again
            raise
        return self

    async def _register(self) -> None:
        on_loop = self._group._on_loop
        iterated = self._on_join is None and self._on_leave is None
        # An iterated watch is held weakly, so that one left with break stops once
        # dropped; a watch with callbacks runs until cancelled, kept or not (as the
        # blocking API's does).
        me: Callable[[], AsyncGroupWatch | None] = weakref.ref(self) if iterated else (lambda: self)

        def relay(kind: str, member: Member) -> None:  # on the coordinator's callback thread, in order
            on_loop.soon(_deliver_to, me, GroupEvent(kind, member))

        self._sync = await self._group._driver.call(self._group._sync.watch, functools.partial(relay, JOINED),
                                                    functools.partial(relay, LEFT), self._existing)
        if iterated:
            weakref.finalize(self, self._group._driver.submit, self._sync.cancel)

    def _deliver(self, event: GroupEvent) -> object:
        if self._on_join is None and self._on_leave is None:
            self._events.put_nowait(event)
            return None
        if event.kind == JOINED and self._on_join is not None:
            return self._on_join(event.member)
        if event.kind == LEFT and self._on_leave is not None:
            return self._on_leave(event.member)
        return None

    def __await__(self) -> Any:
        return self._start().__await__()

    def __aiter__(self) -> AsyncGroupWatch:
        return self

    async def __anext__(self) -> GroupEvent:
        await self._start()
        return await self._events.get()

    async def cancel(self) -> None:
        """Stop the watch (its callbacks, or the iteration: no more events)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)
        if self._sync is not None:
            await self._group._driver.call(self._sync.cancel)

    async def __aenter__(self) -> AsyncGroupWatch:
        return await self._start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.cancel()


def _deliver_to(watch: Callable[[], AsyncGroupWatch | None], event: GroupEvent) -> object:
    live = watch()
    return None if live is None else live._deliver(event)


class AsyncGroup:
    """The group ``name`` (``coord.group(name)``); see :class:`moot.Group`."""

    def __init__(self, sync: Group, driver: Driver, on_loop: OnLoop):
        self._sync = sync
        self._driver = driver
        self._on_loop = on_loop

    def __repr__(self) -> str:
        return repr(self._sync).replace("<moot.Group", "<moot.aio.AsyncGroup", 1)

    @property
    def name(self) -> str:
        return self._sync.name

    @property
    def member_id(self) -> str:
        return self._sync.member_id

    @property
    def joined(self) -> bool:
        """True while this coordinator is a member (and wants to stay one)."""
        return self._sync.joined

    async def create(self) -> bool:
        return await self._driver.call(self._sync.create)

    async def join(self, capabilities: Any = None) -> None:
        await self._driver.call(self._sync.join, capabilities)

    async def leave(self) -> bool:
        return await self._driver.call(self._sync.leave)

    async def remove(self, member_id: str) -> bool:
        return await self._driver.call(self._sync.remove, member_id)

    async def update_capabilities(self, capabilities: Any) -> None:
        await self._driver.call(self._sync.update_capabilities, capabilities)

    async def exists(self) -> bool:
        return await self._driver.call(self._sync.exists)

    async def members(self) -> dict[str, Member]:
        return await self._driver.call(self._sync.members)

    async def member_ids(self) -> set[str]:
        return await self._driver.call(self._sync.member_ids)

    async def member(self, member_id: str) -> Member:
        return await self._driver.call(self._sync.member, member_id)

    async def is_up(self, member_id: str) -> bool:
        return await self._driver.call(self._sync.is_up, member_id)

    async def delete(self) -> None:
        await self._driver.call(self._sync.delete)

    def watch(self, on_join: Callable[[Member], object] | None = None,
              on_leave: Callable[[Member], object] | None = None, existing: bool = False) -> AsyncGroupWatch:
        """Membership changes after the watch starts (with ``existing``: the
        members present first), in the order :class:`moot.recipes.group.GroupWatch`
        states; see :class:`AsyncGroupWatch`."""
        return AsyncGroupWatch(self, on_join, on_leave, existing)
