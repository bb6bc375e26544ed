"""How async calls run: round trips on a small pool of worker threads, waits
on the event loop.

Each :class:`AsyncCoordinator <moot.aio.AsyncCoordinator>` owns one
:class:`Driver`. A plain call (``members()``, ``release()``...) is one job
on the driver's threads. A waiting call (``acquire()``, ``campaign()``...)
is a :class:`moot.waits.Plan`: each step (the round trips between two
waits) is one job, and each wait is awaited on the loop, woken from the
backend's watch thread through ``call_soon_threadsafe``. A task that waits
for its turn therefore holds no thread: a thousand waiting tasks share the
driver's ``threads`` workers (default 4), which only run their round trips.

Cancellation: a task cancelled while it waits withdraws at once (its plan
is closed on a worker: the queue entry is deleted). A task cancelled while
one of its steps is running on a worker cannot stop that thread: the step
finishes, then the plan is closed, or, if the step completed it, its result
is undone (a lock served at that instant is released). Either way the
cancelled task returns only once the cleanup is done, so nothing it started
is left on the engine, and nothing is ever half-acquired.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from moot import deadline as call_deadline
from moot.waits import Plan, Wait

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class _Done(Generic[_T]):
    value: _T


class Driver:
    """Worker threads for one async coordinator (see the module docstring)."""

    def __init__(self, threads: int, name: str):
        self.threads = threads
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._closed = False

    def close(self) -> None:
        """Let the worker threads end once their queued jobs ran. Calls made
        afterwards (which only raise CoordinatorClosed, or find nothing to
        do) run on the loop's default executor."""
        self._closed = True
        self._pool.shutdown(wait=False)

    def submit(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on a worker thread, from any thread, not waiting for
        it (a finalizer's cleanup); dropped once closed (closing the
        coordinator ended everything it would clean)."""
        if not self._closed:
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                self._pool.submit(fn)

    def _executor(self) -> concurrent.futures.Executor | None:
        return None if self._closed else self._pool

    async def call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` on a worker thread, in the caller's context
        (so a deadline set around it holds). Cancelling the caller does not
        stop the call: it completes on its thread."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor(), functools.partial(context.run, fn, *args, **kwargs))

    async def drive(self, plan: Plan[_T]) -> _T:
        """Run ``plan``: its steps on the workers, its waits on the loop."""
        loop = asyncio.get_running_loop()
        steps = plan.steps
        advance: Callable[[], Wait] = steps.__next__
        while True:
            job = loop.run_in_executor(self._executor(), _step, advance, plan.deadline)
            try:
                outcome = await asyncio.shield(job)
            except asyncio.CancelledError:
                await self._clean_up_after(job, plan)
                raise
            if isinstance(outcome, _Done):
                result: _T = outcome.value
                return result
            try:
                woken = await _wait(loop, outcome)
            except asyncio.CancelledError:
                await self._finish(loop, plan, None)
                raise
            advance = functools.partial(steps.send, woken)

    async def _clean_up_after(self, job: asyncio.Future[Any], plan: Plan[Any]) -> None:
        """The caller was cancelled while a step ran: let it finish, then undo it."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def resolve(_cleanup: asyncio.Future[None]) -> None:
            if not done.done():
                done.set_result(None)

        def chained(finished: asyncio.Future[Any]) -> None:
            outcome = None if finished.cancelled() or finished.exception() is not None else finished.result()
            loop.run_in_executor(self._executor(), _undo, plan, outcome).add_done_callback(resolve)

        job.add_done_callback(chained)
        await _uncancellable(done)

    async def _finish(self, loop: asyncio.AbstractEventLoop, plan: Plan[Any], outcome: object) -> None:
        await _uncancellable(loop.run_in_executor(self._executor(), _undo, plan, outcome))


def _step(advance: Callable[[], Wait], deadline: float | None) -> Wait | _Done[Any]:
    """One step, on a worker thread, under the call's deadline."""
    with call_deadline.bounded(deadline):
        try:
            return advance()
        except StopIteration as finished:
            return _Done(finished.value)


def _undo(plan: Plan[Any], outcome: object) -> None:
    """On a worker: close a plan whose caller is gone (its cleanup, e.g.
    withdrawing a queue entry, runs), or undo the result it reached."""
    if isinstance(outcome, _Done):
        if plan.undo is not None:
            plan.undo(outcome.value)
        return
    plan.steps.close()


async def _uncancellable(future: asyncio.Future[Any]) -> None:
    """Await ``future`` to its end even if the awaiting task is cancelled
    again meanwhile (the cleanup must finish; the cancellation still wins)."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    with contextlib.suppress(Exception):
        future.result()
    if cancelled:
        raise asyncio.CancelledError


async def _wait(loop: asyncio.AbstractEventLoop, wait: Wait) -> bool:
    """Await ``wait`` on the loop; True if its wake was set."""
    wake = wait.wake
    if wake is None:
        await asyncio.sleep(wait.timeout or 0.0)
        return False
    woken: asyncio.Future[None] = loop.create_future()

    def set_woken() -> None:
        if not woken.done():
            woken.set_result(None)

    def notify() -> None:  # on the thread that sets the wake
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(set_woken)

    wake.notify(notify)
    try:
        if wake.is_set():
            return True
        try:
            async with asyncio.timeout(wait.timeout):
                await woken
        except TimeoutError:
            return wake.is_set()
        return True
    finally:
        wake.notify(None)
