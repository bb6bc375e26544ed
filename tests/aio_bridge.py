"""The async API behind the blocking API's face, so that one conformance test
body checks both: every call a test makes on a bridged coordinator (and on
the locks, groups, elections and watches it returns) is awaited on one event
loop running on its own thread, through :mod:`moot.aio` only.

The loop runs in debug mode with ``slow_callback_duration`` at 5 ms; the
slow callbacks it reports are counted for the run's summary. Its thread is
watched by a :class:`tests.loop_guard.LoopGuard`: a moot call that did I/O
or waited on the loop's thread fails the test that made it (the ``connect``
fixture checks after each test).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import moot
import moot.aio
from moot.aio.coordinator import AsyncCoordinator
from tests.loop_guard import LoopGuard

#: Longest a loop callback may run before asyncio's debug mode reports it.
SLOW_CALLBACK = 0.005
_BRIDGED = (moot.aio.AsyncCoordinator, moot.aio.AsyncLock, moot.aio.AsyncRWLock, moot.aio.AsyncSemaphore,
            moot.aio.AsyncGroup, moot.aio.AsyncGroupWatch, moot.aio.AsyncElection, moot.aio.AsyncHeld)


class SlowCallbacks(logging.Handler):
    """Collects asyncio's debug-mode reports of slow callbacks (and their durations)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        found = re.search(r" took (\d+\.\d+) seconds$", message)
        if message.startswith("Executing") and found:
            self.seen.append(float(found.group(1)))


#: (where, slow callbacks reported, longest in seconds) for the run's summary.
STALLS: list[tuple[str, int, float]] = []


class LoopThread:
    """One event loop on a daemon thread, in debug mode, for the whole run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = SLOW_CALLBACK
        self.slow = SlowCallbacks()
        logging.getLogger("asyncio").addHandler(self.slow)
        self._thread = threading.Thread(target=self.loop.run_forever, name="aio-bridge-loop", daemon=True)
        self._thread.start()
        self.guard = LoopGuard()
        self.guard.install(self.loop)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


_loop: LoopThread | None = None
_loop_lock = threading.Lock()


def loop_thread() -> LoopThread:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = LoopThread()
        return _loop


def summary() -> tuple[str, int, float] | None:
    """The bridge loop's slow-callback figures, if it ran."""
    if _loop is None:
        return None
    seen = _loop.slow.seen
    return ("async conformance runs (bridge loop)", len(seen), max(seen, default=0.0))


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _bridged(value: Any) -> Any:
    """``value``'s bridge: the same one each time (``held is rw`` holds)."""
    if not (isinstance(value, _BRIDGED) or hasattr(value, "__aenter__")):
        return value
    bridge = getattr(value, "_test_bridge", None)
    if bridge is None:
        bridge = Bridge(value)
        object.__setattr__(value, "_test_bridge", bridge)  # frozen dataclasses (AsyncHeld) too
    return bridge


class Bridge:
    """A blocking view of an async moot object (see the module docstring)."""

    def __init__(self, target: Any):
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        target = self._target
        if isinstance(target, AsyncCoordinator) and name in ("backend", "session", "key"):
            return getattr(target.sync, name)  # the primitives tests inspect
        value = getattr(target, name)
        if not callable(value):
            return value
        loop = loop_thread()

        def call(*args: Any, **kwargs: Any) -> Any:
            return _bridged(loop.run(_call(value, args, kwargs)))

        return call

    def __repr__(self) -> str:
        return repr(self._target)

    def __eq__(self, other: object) -> bool:
        return bool(self._target == (other._target if isinstance(other, Bridge) else other))

    def __hash__(self) -> int:
        return hash(self._target)

    def __enter__(self) -> Any:
        target = self._target
        if isinstance(target, moot.aio.AsyncGroupWatch):
            loop_thread().run(_call(target.__aenter__, (), {}))
            return self
        return _bridged(loop_thread().run(_call(target.__aenter__, (), {})))

    def __exit__(self, *exc: Any) -> None:
        loop_thread().run(_call(self._target.__aexit__, exc, {}))


def connect(url: str, member_id: str | None = None, **options: Any) -> Any:
    """A bridged :class:`moot.aio.AsyncCoordinator` (see the module docstring)."""
    return _bridged(loop_thread().run(_connect(url, member_id, options)))


async def _connect(url: str, member_id: str | None, options: dict[str, Any]) -> AsyncCoordinator:
    return await moot.aio.connect(url, member_id, **options)


def close(coord: Any) -> None:
    with contextlib.suppress(Exception):
        coord.close()
