"""The ConnectionLost of a memcached request that gave up says what ended
it: the caller's deadline (with how much of it was left when the request
started), or the backend's own bound for one request. Shown on a real
memcached frozen with SIGSTOP (it accepts nothing and answers nothing)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from moot import deadline
from moot.backends.memcached import MemcachedBackend
from moot.errors import ConnectionLost
from tests import servers
from tests.conftest import MakeBackend

_STATED = re.compile(r"gave up after (\d+\.\d\d)s")
_LEFT = re.compile(r"this request started with (\d+\.\d\d)s of it left")


@pytest.fixture
def frozen(open_backend: MakeBackend) -> Iterator[tuple[MemcachedBackend, servers.Member]]:
    """A backend connected to a memcached of this test's own (socket_timeout
    0.5 s), and the server, running: the test freezes it."""
    with servers.own_cluster("memcached") as cluster:
        backend = open_backend(cluster.url, ttl=None, timeout=5.0, socket_timeout=0.5)
        assert isinstance(backend, MemcachedBackend)
        backend.get("warm/key")  # a pooled connection: the frozen server need not accept one
        yield backend, cluster.members[0]


def _stated(message: str, pattern: re.Pattern[str]) -> float:
    found = pattern.search(message)
    assert found is not None, message
    return float(found.group(1))


def _lost_on_a_frozen_server(backend: MemcachedBackend, member: servers.Member, bound: float) -> tuple[str, float]:
    """Freeze ``member``, then read from it under a caller's deadline of
    ``bound`` seconds: the ConnectionLost's message, and the time it took."""
    member.freeze()
    began = time.monotonic()
    with deadline.bounded(began + bound), pytest.raises(ConnectionLost) as lost:
        backend.get("some/key")
    return str(lost.value), time.monotonic() - began

def test_a_request_ended_by_the_callers_deadline_says_so(frozen: tuple[MemcachedBackend, servers.Member]) -> None:
    """The bench's "gave up after 0.00s" came from a request that started with
    the caller's time nearly spent: the message names the caller's deadline
    and how much of it the request had, not only its own (short) time."""
    message, spent = _lost_on_a_frozen_server(*frozen, bound=0.2)
    assert "did not answer in time" in message and "when the caller's deadline passed" in message, message
    left, stated = _stated(message, _LEFT), _stated(message, _STATED)
    assert 0.0 <= left <= 0.2, message  # what the request had of the caller's 0.2 s
    assert left - 0.01 <= stated <= spent + 0.01, (message, spent)  # it waited until the deadline, no longer


def test_a_request_ended_by_its_own_bound_does_not_blame_the_deadline(
        frozen: tuple[MemcachedBackend, servers.Member]) -> None:
    """socket_timeout (0.5 s) ends the request well before the caller's
    deadline (30 s): the message states the time spent and no deadline."""
    message, spent = _lost_on_a_frozen_server(*frozen, bound=30.0)
    assert "did not answer in time" in message and "deadline" not in message, message
    assert 0.5 - 0.01 <= _stated(message, _STATED) <= spent + 0.01, (message, spent)
