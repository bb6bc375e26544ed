"""Notices from the coordinator's threads delivered on the event loop: a
lost hold, a new leader, a member joining or leaving. Each is scheduled
with ``call_soon_threadsafe``; a callback given by the application runs on
the loop (a coroutine function's coroutine becomes a task)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("moot.aio")


class OnLoop:
    """Runs application callbacks on one loop, from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._tasks: set[asyncio.Task[Any]] = set()  # strong references until done

    def soon(self, fn: Callable[..., object], *args: Any) -> None:
        """From any thread: run ``fn(*args)`` on the loop (dropped once the loop is closed)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._run, fn, args)

    def _run(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            result = fn(*args)
        except Exception:
            log.exception("moot: a callback raised")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("moot: a callback coroutine raised", exc_info=task.exception())


class LostNotice:
    """The lost-hold notice of one async hold: ``on_lost(owner)`` on the
    loop, and an event :meth:`wait` returns on."""

    def __init__(self, on_loop: OnLoop, owner: object, on_lost: Callable[[Any], object] | None):
        self._on_loop = on_loop
        self._owner = owner
        self._on_lost = on_lost
        self._lost = asyncio.Event()

    def from_thread(self, _sync_hold: object) -> None:
        """The sync recipe's ``on_lost``, called on the coordinator's callback thread."""
        self._on_loop.soon(self._deliver)

    def _deliver(self) -> object:
        if getattr(self._owner, "is_held", False):
            return None  # about an earlier hold: a loss is reported only after its hold was dropped
        self._lost.set()
        return None if self._on_lost is None else self._on_lost(self._owner)

    def reset(self) -> None:
        """A new acquisition begins: forget the loss of an earlier hold."""
        self._lost.clear()

    async def wait(self) -> None:
        await self._lost.wait()
