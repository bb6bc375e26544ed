"""Waits written once for both APIs: a recipe's waiting path is a generator
of *steps* that does its round trips itself and yields a :class:`Wait`
wherever it would block until something happens. A driver runs it:

* :func:`run` (the blocking API) sends it on the calling thread and waits
  on a thread event;
* :mod:`moot.aio` runs each step (the round trips between two waits) on a
  worker thread and awaits the wait on the event loop, so a task waiting
  for its turn holds no thread at all.

A step runs under the call's deadline (:mod:`moot.deadline`), applied by
the driver around each step: a context variable cannot be held across a
``yield`` when the steps run on different threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Generic, TypeVar

from moot import deadline as call_deadline
from moot import realthreads

_T = TypeVar("_T")


class Wake:
    """A flag set from any thread (a watch's callback) that ends a
    :class:`Wait`. Set before the wait began, it ends the wait at once."""

    __slots__ = ("_event", "_notify")

    def __init__(self) -> None:
        self._event = realthreads.Event()
        self._notify: Callable[[], None] | None = None

    def set(self) -> None:
        self._event.set()
        notify = self._notify
        if notify is not None:
            notify()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Block the calling thread until set or ``timeout``; True if set."""
        return self._event.wait(timeout)

    def notify(self, callback: Callable[[], None] | None) -> None:
        """Also call ``callback()`` (from the setting thread) when set, or
        stop calling one (None). The caller checks :meth:`is_set` after
        this, so a set in between is never missed."""
        self._notify = callback


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """Block until ``wake`` is set or ``timeout`` seconds pass (None: no
    limit); the steps are sent True if woken. Without ``wake``, a plain
    pause of ``timeout`` seconds."""

    wake: Wake | None
    timeout: float | None


#: A waiting path: yields Waits, is sent whether each ended woken, returns its result.
Steps = Generator[Wait, bool, _T]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan(Generic[_T]):
    """A call ready to be driven: its ``steps``, the ``deadline`` they run
    under, and ``undo(result)``: what undoes a result nobody will see (an
    asynchronous caller cancelled while the last step was on its way, e.g.
    a lock served just then is released)."""

    steps: Steps[_T]
    deadline: float | None
    undo: Callable[[_T], object] | None = None


def run(plan: Plan[_T]) -> _T:
    """Drive ``plan`` on the calling thread, each step under its deadline."""
    return drive(plan.steps, plan.deadline)


def drive(steps: Steps[_T], deadline: float | None) -> _T:
    """Drive ``steps`` on the calling thread, each step under ``deadline``
    (:func:`run` without a :class:`Plan`: a blocking call has no use for ``undo``)."""
    woken: bool | None = None  # None: the first step
    bound = call_deadline.UNBOUNDED if deadline is None else call_deadline.bounded(deadline)  # one step at a time
    while True:
        with bound:
            try:
                wait = steps.__next__() if woken is None else steps.send(woken)
            except StopIteration as done:
                result: _T = done.value
                return result
        if wait.wake is None:
            realthreads.pause(wait.timeout or 0.0)
            woken = False
        else:
            woken = wait.wake.wait(wait.timeout)
