"""Run by tests/test_eventlet.py inside a monkey-patched process (and
harmless outside one): the heartbeat is a real OS thread, so a green thread
that keeps the CPU for longer than the TTL does not cost the session."""

from __future__ import annotations

import time

from tests.conftest import TEST_TTL, Connect


def test_a_cpu_bound_green_thread_does_not_stop_the_heartbeat(connect: Connect) -> None:
    coord = connect("busy")
    lock = coord.lock("volume")
    assert lock.acquire(timeout=10)
    busy_until = time.monotonic() + TEST_TTL * 2  # never yields to eventlet's hub
    while time.monotonic() < busy_until:
        pass
    assert lock.is_held
    assert coord.stats()["counters"].get("sessions_lost", {}).get("coordinator", 0) == 0
