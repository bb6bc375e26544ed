"""moot for asyncio programs: the same locks, groups and elections, with the
same guarantees, names, arguments, defaults and errors as the blocking API.

    async with moot.aio.connect("redis://127.0.0.1:6379") as coord:
        async with coord.lock("volume-42", timeout=5) as held:
            await write_volume(fencing_token=held.token)

No call blocks the event loop: round trips run on a few worker threads per
coordinator (``threads``, default 4) and waits happen on the loop, so a task
waiting for a lock holds no thread, and cancelling it (directly or through
``asyncio.timeout``) withdraws it from the queue. See docs/asyncio.md.
"""

from moot.aio.coordinator import DEFAULT_THREADS, AsyncCoordinator, connect
from moot.aio.election import AsyncElection
from moot.aio.group import AsyncGroup, AsyncGroupWatch, GroupEvent
from moot.aio.locks import AsyncHeld, AsyncLock, AsyncRWLock, AsyncSemaphore

__all__ = [
    "DEFAULT_THREADS",
    "AsyncCoordinator",
    "AsyncElection",
    "AsyncGroup",
    "AsyncGroupWatch",
    "AsyncHeld",
    "AsyncLock",
    "AsyncRWLock",
    "AsyncSemaphore",
    "GroupEvent",
    "connect",
]
