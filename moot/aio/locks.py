"""Async locks, shared/exclusive locks and semaphores: the sync recipes'
holds (same queue, same guarantees, same errors), acquired through
:meth:`Driver.drive <moot.aio.driver.Driver.drive>` so that waiting holds
no thread and a cancelled acquire withdraws cleanly.

One object is one holder, and tasks never wait for one another on it: a
task's ``acquire()`` while another task holds or is acquiring the same
object raises :class:`~moot.errors.LockError` saying so (the holding task
acquiring again does too: not reentrant). Give each task its own object
(objects with one name exclude each other, and a waiting task holds no
thread). Threads sharing one blocking :class:`moot.Lock` wait instead, as
with ``threading.Lock``; see :mod:`moot.recipes.hold`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from moot.aio.driver import Driver
from moot.aio.notices import LostNotice, OnLoop
from moot.errors import LockTimeout
from moot.recipes.hold import Held, Hold
from moot.recipes.lock import Lock
from moot.recipes.queue import Waiter
from moot.recipes.rwlock import RWLock
from moot.recipes.semaphore import Semaphore, SemaphoreInfo
from moot.waits import Plan


@dataclasses.dataclass(frozen=True)
class AsyncHeld:
    """One acquisition, as ``async with coord.lock(name) as held:`` and a
    successful ``await election.campaign()`` give it: ``token`` is an int;
    see :class:`moot.recipes.hold.Held`."""

    held: Held = dataclasses.field(repr=False)
    driver: Driver = dataclasses.field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.held.name

    @property
    def token(self) -> int:
        return self.held.token

    @property
    def since(self) -> float:
        return self.held.since

    @property
    def is_held(self) -> bool:
        return self.held.is_held

    async def release(self) -> bool:
        """Release this acquisition; True if it was still held."""
        return await self.driver.call(self.held.release)


class _AsyncHold:
    """What every async hold shares: its state (no round trip), release,
    and the lost notice."""

    def __init__(self, make: Callable[[Callable[[Any], None]], Hold], driver: Driver, on_loop: OnLoop,
                 timeout: float | None, on_lost: Callable[[Any], object] | None):
        """``make(on_lost)``: the sync hold, told to call ``on_lost`` on a loss."""
        self._notice = LostNotice(on_loop, self, on_lost)
        self._sync = make(self._notice.from_thread)
        self._driver = driver
        self._timeout = timeout

    @property
    def name(self) -> str:
        return self._sync.name

    @property
    def token(self) -> int | None:
        """Fencing token of the current hold (None when not held)."""
        return self._sync.token

    @property
    def is_held(self) -> bool:
        """True while held and the session is trusted (no round trip; see the sync recipe)."""
        return self._sync.is_held

    @property
    def since(self) -> float | None:
        return self._sync.since

    async def release(self) -> bool:
        """Release the hold; True if it was held (never raises for one that is gone)."""
        return await self._driver.call(self._sync.release)

    async def wait_lost(self) -> None:
        """Return once the current hold is lost with the session (not on
        release): for a task that must stop work the moment it no longer holds."""
        await self._notice.wait()

    async def _acquire(self, plan: Plan[bool]) -> bool:
        """Drive an acquisition (a new hold: an earlier one's loss is forgotten)."""
        self._notice.reset()
        return await self._driver.drive(plan)


class AsyncLock(_AsyncHold):
    """An exclusive, FIFO, fenced lock (``coord.lock(name)``); see :class:`moot.Lock`."""

    _sync: Lock

    def __repr__(self) -> str:
        return repr(self._sync).replace("<moot.Lock", "<moot.aio.AsyncLock", 1)

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; True once held, False if not (non-blocking, or
        ``timeout`` ran out). Cancelling the task withdraws from the queue."""
        return await self._acquire(self._sync.acquire_plan(blocking, timeout))

    async def __aenter__(self) -> AsyncHeld:
        """``async with coord.lock(name) as held:``: ``held.token`` is an int."""
        if not await self.acquire(timeout=self._timeout):
            raise LockTimeout(f"lock {self.name!r} not acquired within {self._timeout}s")
        return AsyncHeld(self._sync.held(), self._driver)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()


class AsyncRWLock(_AsyncHold):
    """A shared/exclusive lock (``coord.rwlock(name)``); see :class:`moot.RWLock`."""

    _sync: RWLock

    def __repr__(self) -> str:
        return repr(self._sync).replace("<moot.RWLock", "<moot.aio.AsyncRWLock", 1)

    @property
    def mode(self) -> str | None:
        """``"shared"``, ``"exclusive"``, or None when not held."""
        return self._sync.mode

    async def acquire_read(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return await self._acquire(self._sync.read_plan(blocking, timeout))

    async def acquire_write(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return await self._acquire(self._sync.write_plan(blocking, timeout))

    async def upgrade(self, timeout: float | None = None) -> bool:
        """Shared to exclusive, keeping the shared hold meanwhile; see :meth:`moot.RWLock.upgrade`."""
        return await self._driver.drive(self._sync.upgrade_plan(timeout))

    def read(self, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[AsyncRWLock]:
        """``async with rw.read():`` a shared hold for the block; LockTimeout if not acquired in time."""
        return self._held("shared", self._sync.read_plan, timeout)

    def write(self, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[AsyncRWLock]:
        """``async with rw.write():`` an exclusive hold for the block."""
        return self._held("exclusive", self._sync.write_plan, timeout)

    @contextlib.asynccontextmanager
    async def _held(self, mode: str, plan: Callable[[bool, float | None], Plan[bool]],
                    timeout: float | None) -> AsyncIterator[AsyncRWLock]:
        wait = self._timeout if timeout is None else timeout
        if not await self._acquire(plan(True, wait)):
            raise LockTimeout(f"rwlock {self.name!r} ({mode}) not acquired within {wait}s")
        try:
            yield self
        finally:
            await self.release()


class AsyncSemaphore(_AsyncHold):
    """A counting semaphore (``coord.semaphore(name, limit)``); see :class:`moot.Semaphore`."""

    _sync: Semaphore

    def __repr__(self) -> str:
        return repr(self._sync).replace("<moot.Semaphore", "<moot.aio.AsyncSemaphore", 1)

    @property
    def limit(self) -> int:
        return self._sync.limit

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return await self._acquire(self._sync.acquire_plan(blocking, timeout))

    async def info(self) -> SemaphoreInfo:
        return await self._driver.call(self._sync.info)

    async def holders(self) -> list[Waiter]:
        return await self._driver.call(self._sync.holders)

    async def __aenter__(self) -> AsyncSemaphore:
        if not await self.acquire(timeout=self._timeout):
            raise LockTimeout(f"semaphore {self.name!r} not acquired within {self._timeout}s")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()
