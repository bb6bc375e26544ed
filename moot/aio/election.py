"""Async leader election: :class:`moot.Election` with ``campaign()`` driven
on the loop (a waiting candidate holds no thread; cancelling withdraws the
candidacy), leader changes as callbacks on the loop or as an async
iterator (:meth:`AsyncElection.observe`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Literal

from moot.aio.driver import Driver
from moot.aio.locks import AsyncHeld
from moot.aio.notices import LostNotice, OnLoop
from moot.recipes.election import Election


class AsyncElection:
    """The election ``name`` (``coord.election(name)``); see :class:`moot.Election`."""

    def __init__(self, make: Callable[[Callable[[Election], None]], Election], driver: Driver, on_loop: OnLoop,
                 on_lost: Callable[[AsyncElection], object] | None = None):
        """``make(on_lost)``: the sync election, told to call ``on_lost`` on a loss."""
        self._notice = LostNotice(on_loop, self, on_lost)
        self._sync = make(self._notice.from_thread)
        self._driver = driver
        self._on_loop = on_loop
        self._relays: dict[Callable[[str | None], object], Callable[[str | None], None]] = {}

    def __repr__(self) -> str:
        return repr(self._sync).replace("<moot.Election", "<moot.aio.AsyncElection", 1)

    @property
    def name(self) -> str:
        return self._sync.name

    @property
    def is_leader(self) -> bool:
        """True while leading and the session is trusted (no round trip)."""
        return self._sync.is_leader

    @property
    def is_held(self) -> bool:
        """The same as :attr:`is_leader` (leadership is a hold)."""
        return self._sync.is_held

    @property
    def token(self) -> int | None:
        """Fencing token of the current leadership (None when not leading)."""
        return self._sync.token

    async def campaign(self, timeout: float | None = None, blocking: bool = True) -> AsyncHeld | Literal[False]:
        """Stand and wait until elected: the leadership (its ``token`` an
        int), or False; see :meth:`moot.Election.campaign`. Cancelling the
        task withdraws the candidacy."""
        plan = self._sync.campaign_plan(timeout, blocking)
        self._notice.reset()  # a new leadership: an earlier one's loss is forgotten
        return AsyncHeld(self._sync.held(), self._driver) if await self._driver.drive(plan) else False

    async def resign(self) -> bool:
        return await self._driver.call(self._sync.resign)

    async def leader(self) -> str | None:
        return await self._driver.call(self._sync.leader)

    async def candidates(self) -> list[str]:
        return await self._driver.call(self._sync.candidates)

    async def wait_lost(self) -> None:
        """Return once the current leadership is lost with the session (not on resign)."""
        await self._notice.wait()

    async def on_change(self, callback: Callable[[str | None], object]) -> None:
        """Call ``callback(leader_or_None)`` on the loop whenever the leader changes."""

        def relay(leader: str | None) -> None:  # on the coordinator's callback thread
            self._on_loop.soon(callback, leader)

        self._relays[callback] = relay
        await self._driver.call(self._sync.on_change, relay)

    async def stop_watching(self, callback: Callable[[str | None], object] | None = None) -> None:
        """Stop the ``on_change`` callbacks (only ``callback``, if given)."""
        if callback is None:
            self._relays.clear()
            await self._driver.call(self._sync.stop_watching)
            return
        relay = self._relays.pop(callback, None)
        if relay is not None:
            await self._driver.call(self._sync.stop_watching, relay)

    async def observe(self) -> AsyncIterator[str | None]:
        """The current leader (None: nobody leads), then each new one, for as
        long as the iteration goes on: ``async for leader in election.observe():``."""
        changes: asyncio.Queue[str | None] = asyncio.Queue()
        await self.on_change(changes.put_nowait)
        try:
            last = await self.leader()
            yield last
            while True:
                leader = await changes.get()
                if leader != last:
                    last = leader
                    yield leader
        finally:
            await self.stop_watching(changes.put_nowait)
