"""Bounded waits on conditions: tests wait for events, never sleep and hope."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Upper bound for anything a test waits for; generous, since a slow CI machine
#: must not turn into a red run. Speed is measured in bench/, not here.
BOUND = 20.0


def wait_until(predicate: Callable[[], object], timeout: float = BOUND, what: str = "condition") -> None:
    """Return once ``predicate()`` is true; fail the test after ``timeout`` seconds.

    Re-checks after short pauses: this is for state that the test cannot get
    an event for (another process's effect, a backend's view)."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def wait_event(event: threading.Event, timeout: float = BOUND, what: str = "event") -> None:
    if not event.wait(timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
