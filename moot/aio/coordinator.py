"""The async coordinator: :func:`connect` and :class:`AsyncCoordinator`,
a facade over one sync :class:`moot.Coordinator` (its session, heartbeat
and guarantees) whose round trips run on a :class:`~moot.aio.driver.Driver`
and whose waits and notices happen on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any

from moot.aio.driver import Driver
from moot.aio.election import AsyncElection
from moot.aio.group import AsyncGroup
from moot.aio.locks import AsyncLock, AsyncRWLock, AsyncSemaphore
from moot.aio.notices import OnLoop
from moot.backends.base import Watch
from moot.coordinator import Coordinator
from moot.coordinator import connect as connect_sync
from moot.errors import InvalidArgument
from moot.recipes.lock import LockInfo
from moot.recipes.semaphore import SemaphoreInfo

#: Worker threads per async coordinator unless ``threads=`` says otherwise.
DEFAULT_THREADS = 4


class AsyncCoordinator:
    """A session with a coordination backend, for asyncio programs; the
    factory of the async recipes. ``async with``: ``close()`` on exit.

    Same names, arguments, defaults and errors as :class:`moot.Coordinator`;
    calls that do I/O are coroutines. Use it from the loop it was made on."""

    def __init__(self, sync: Coordinator, driver: Driver, loop: asyncio.AbstractEventLoop):
        self.sync = sync
        self._driver = driver
        self._on_loop = OnLoop(loop)

    def __repr__(self) -> str:
        return repr(self.sync).replace("<moot.Coordinator", "<moot.aio.AsyncCoordinator", 1)

    async def __aenter__(self) -> AsyncCoordinator:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Release held locks, leave joined groups, end the session. Idempotent."""
        if self.sync.closed:
            return
        try:
            await self._driver.call(self.sync.close)
        finally:
            self._driver.close()

    # -- what the session is (no I/O) --------------------------------------
    @property
    def closed(self) -> bool:
        return self.sync.closed

    @property
    def url(self) -> str:
        return self.sync.url

    @property
    def member_id(self) -> str:
        return self.sync.member_id

    @property
    def namespace(self) -> str:
        return self.sync.namespace

    @property
    def ttl(self) -> float:
        return self.sync.ttl

    @property
    def timeout(self) -> float:
        return self.sync.timeout

    @property
    def session_id(self) -> str | None:
        return self.sync.session_id

    @property
    def threads(self) -> int:
        """The worker threads that run this coordinator's round trips."""
        return self._driver.threads

    def stats(self) -> dict[str, Any]:
        return self.sync.stats()

    # -- calls ---------------------------------------------------------------
    async def ping(self) -> str:
        return await self._driver.call(self.sync.ping)

    async def lock_info(self, name: str) -> LockInfo | None:
        """Who holds lock ``name`` and who waits; None if nobody."""
        return await self._driver.call(self.sync.lock_info, name)

    async def locks(self) -> list[LockInfo]:
        return await self._driver.call(self.sync.locks)

    async def groups(self) -> list[str]:
        return await self._driver.call(self.sync.groups)

    async def semaphores(self) -> list[SemaphoreInfo]:
        return await self._driver.call(self.sync.semaphores)

    async def watch_lock(self, name: str, callback: Callable[[], object]) -> Watch:
        """Call ``callback()`` on the loop after any change to lock ``name``."""
        return await self._driver.call(self.sync.watch_lock, name, lambda: self._on_loop.soon(callback))

    # -- recipes (no I/O until used) -----------------------------------------
    def lock(self, name: str, timeout: float | None = None,
             on_lost: Callable[[AsyncLock], object] | None = None) -> AsyncLock:
        """An exclusive, FIFO, fenced lock; ``on_lost`` runs on the loop."""
        return AsyncLock(lambda lost: self.sync.lock(name, timeout, lost), self._driver, self._on_loop,
                         timeout, on_lost)

    def rwlock(self, name: str, timeout: float | None = None,
               on_lost: Callable[[AsyncRWLock], object] | None = None) -> AsyncRWLock:
        return AsyncRWLock(lambda lost: self.sync.rwlock(name, timeout, lost), self._driver, self._on_loop,
                           timeout, on_lost)

    def semaphore(self, name: str, limit: int, timeout: float | None = None,
                  on_lost: Callable[[AsyncSemaphore], object] | None = None) -> AsyncSemaphore:
        return AsyncSemaphore(lambda lost: self.sync.semaphore(name, limit, timeout, lost), self._driver,
                              self._on_loop, timeout, on_lost)

    def group(self, name: str, member_id: str | None = None) -> AsyncGroup:
        return AsyncGroup(self.sync.group(name, member_id), self._driver, self._on_loop)

    def election(self, name: str, on_lost: Callable[[AsyncElection], object] | None = None) -> AsyncElection:
        return AsyncElection(lambda lost: self.sync.election(name, lost), self._driver, self._on_loop, on_lost)


class _Connecting:
    """What :func:`connect` returns: await it for the coordinator, or use it
    in ``async with`` (closed on exit)."""

    def __init__(self, url: str | None, member_id: str | None, threads: int, options: dict[str, Any]):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InvalidArgument(f"threads={threads!r}: give a positive number of worker threads")
        self._args = (url, member_id, threads, options)
        self._made: AsyncCoordinator | None = None

    async def _connect(self) -> AsyncCoordinator:
        url, member_id, threads, options = self._args
        driver = Driver(threads, "moot-aio")
        try:
            sync = await driver.call(connect_sync, url, member_id, **options)
        except BaseException:
            driver.close()
            raise
        self._made = AsyncCoordinator(sync, driver, asyncio.get_running_loop())
        return self._made

    def __await__(self) -> Generator[Any, None, AsyncCoordinator]:
        return self._connect().__await__()

    async def __aenter__(self) -> AsyncCoordinator:
        return await self._connect()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._made is not None:
            await self._made.close()


def connect(url: str | None = None, member_id: str | None = None, *, threads: int = DEFAULT_THREADS,
            **options: Any) -> _Connecting:
    """Open a session, as :func:`moot.connect` (same URL, options and
    errors): ``coord = await moot.aio.connect(url)`` or
    ``async with moot.aio.connect(url) as coord:``. ``threads``: the worker
    threads that run its round trips (waiting tasks hold none)."""
    return _Connecting(url, member_id, threads, options)
