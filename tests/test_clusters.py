"""Locks and groups keep working when a member of a three-member etcd cluster
or ZooKeeper ensemble dies.

Each kind gets its own cluster on 127.0.0.1 (module scope, stopped at the
end). Clients are given every member in one URL; the failover test kills the
leader (by PID, SIGKILL) while a lock is held, another client waits for it
and a group has members, then checks through the public API that the session
survived, the waiter is woken by the release, new clients connect, tokens
keep growing and group membership and watches still work. The killed member
is restarted afterwards so the cluster is whole for the next test.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

import moot
from tests import servers
from tests.waiting import BOUND, wait_event, wait_until

#: Long enough that a session outlives a leader election on a slow machine.
TTL = 5.0

Connect = Callable[[str, str], moot.Coordinator]  # (member_id, url) -> coordinator


@pytest.fixture(scope="module", params=["etcd", "zookeeper"])
def cluster(request: pytest.FixtureRequest) -> Iterator[servers.Cluster]:
    started = servers.start_cluster(request.param, size=3)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def connect(cluster: servers.Cluster) -> Iterator[Connect]:
    """Coordinators in a fresh namespace, closed after the test."""
    opened: list[moot.Coordinator] = []
    namespace = f"c-{uuid.uuid4().hex[:12]}"

    def make(member_id: str, url: str) -> moot.Coordinator:
        coord = moot.connect(url, member_id=member_id, ttl=TTL, namespace=namespace)
        opened.append(coord)
        return coord

    yield make
    for coord in opened:
        coord.close()


def lock_info(coord: moot.Coordinator, name: str) -> moot.LockInfo:
    info = coord.lock_info(name)
    assert info is not None, f"nobody holds or waits for {name!r}"
    return info


def test_every_member_serves_the_same_state(cluster: servers.Cluster, connect: Connect) -> None:
    """A lock taken and a group joined through one member are seen through the others."""
    first, *others = cluster.members
    holder = connect("holder", cluster.kind.url([first]))
    lock = holder.lock("volume-1")
    assert lock.acquire(timeout=BOUND)
    holder.group("workers").join()
    for member in others:
        viewer = connect(f"viewer-{member.index}", cluster.kind.url([member]))
        info = lock_info(viewer, "volume-1")
        assert info.holder == "holder" and info.token == lock.token
        assert set(viewer.group("workers").members()) == {"holder"}
    assert lock.release() is True


def test_locks_and_groups_survive_losing_the_leader(cluster: servers.Cluster, connect: Connect) -> None:
    leader = cluster.leader(timeout=BOUND)
    # The leader first: a client that tries hosts in order starts on it and must fail over.
    url = cluster.kind.url([leader] + [m for m in cluster.members if m is not leader])

    a, b = connect("a", url), connect("b", url)
    held = a.lock("volume-42")
    assert held.acquire(timeout=BOUND)
    first_token = held.token
    assert first_token is not None

    waiter = b.lock("volume-42")
    woken = threading.Event()
    outcome: list[bool | BaseException] = []

    def wait_for_lock() -> None:
        try:
            outcome.append(waiter.acquire(timeout=3 * BOUND))
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)
        woken.set()

    thread = threading.Thread(target=wait_for_lock, daemon=True)
    thread.start()
    wait_until(lambda: len(lock_info(a, "volume-42").waiters) == 1, what="b to queue for the lock")

    a_group = a.group("workers")
    a_group.join(capabilities={"n": 1})
    b.group("workers").join()
    c_joined = threading.Event()

    def on_join(member: moot.Member) -> None:
        if member.member_id == "c":
            c_joined.set()

    a_group.watch(on_join=on_join)

    cluster.kill(leader)
    try:
        new_leader = cluster.leader(timeout=BOUND)
        assert new_leader is not leader

        # a's session outlived the failover: it still holds the lock, b still waits.
        info = lock_info(a, "volume-42")
        assert info.holder == "a" and info.token == first_token
        assert [w.member for w in info.waiters] == ["b"]
        assert held.is_held and not woken.is_set()
        assert set(a_group.members()) == {"a", "b"}

        # The release wakes the waiter, through the new leader.
        assert held.release() is True
        wait_event(woken, what="b woken by a's release after the failover")
        assert outcome == [True] and waiter.token is not None
        tokens = [first_token, waiter.token]
        assert waiter.release() is True

        # A client connecting now (its URL still names the dead member) works too.
        c = connect("c", url)
        c.group("workers").join()
        wait_event(c_joined, what="a's group watch to see c join")
        assert set(c.group("workers").members()) == {"a", "b", "c"}
        assert c.group("workers").is_up("a")

        for coord in (c, a, b):
            lock = coord.lock("volume-42")
            assert lock.acquire(timeout=BOUND) and lock.token is not None
            tokens.append(lock.token)
            assert lock_info(coord, "volume-42").holder == coord.member_id
            assert lock.release() is True
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
        assert c.lock_info("volume-42") is None
    finally:
        thread.join(timeout=BOUND)
        cluster.restart(leader)
