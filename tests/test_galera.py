"""The MySQL backend on a three-node MariaDB Galera cluster (every node a
primary): locks taken through different nodes exclude each other and their
tokens grow, also while clients on three nodes contend and when a node is
SIGKILLed mid-run (its clients move to a live node; nobody holds twice).

The cluster is started by ``tests/servers.py`` (kind ``galera``) once for
this module; it runs only when the run includes the mysql backend.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

import moot
from tests import servers
from tests.conftest import _selected
from tests.waiting import wait_until

TTL = 2.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[servers.Cluster]:
    if "mysql" not in {kind for kind, _ in _selected()}:
        pytest.skip("mysql is not among this run's backends")
    started = servers.start_cluster("galera", size=3)
    yield started
    started.stop()


def _node_url(cluster: servers.Cluster, *indexes: int) -> str:
    return cluster.kind.url([cluster.members[i] for i in indexes])


def test_every_node_is_a_galera_primary_of_one_cluster(cluster: servers.Cluster) -> None:
    for index in range(3):
        with moot.connect(_node_url(cluster, index), ttl=TTL) as coord:
            assert "Galera node" in coord.backend.ping()


def test_locks_taken_through_different_nodes_exclude_each_other(cluster: servers.Cluster) -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    coords = [moot.connect(_node_url(cluster, i), member_id=f"n{i}", ttl=TTL, namespace=namespace)
              for i in range(3)]
    try:
        first = coords[0].lock("x")
        assert first.acquire(timeout=5)
        assert not coords[1].lock("x").acquire(blocking=False)
        assert not coords[2].lock("x").acquire(blocking=False)
        assert coords[2].lock_info("x").holder == "n0"  # type: ignore[union-attr]
        first_token = first.token
        first.release()
        second = coords[1].lock("x")
        assert second.acquire(timeout=5)
        assert second.token is not None and first_token is not None and second.token > first_token
        second.release()
    finally:
        for coord in coords:
            coord.close()


class Referee:
    """Who holds the lock now, and the tokens in the order they were served."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: str | None = None
        self.tokens: list[int] = []
        self.overlaps: list[str] = []
        self.served: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def enter(self, who: str, token: int | None) -> None:
        with self.lock:
            if self.holder is not None:
                self.overlaps.append(f"{who} served while {self.holder} held")
            self.holder = who
            self.tokens.append(token or 0)
            self.served[who] = self.served.get(who, 0) + 1

    def leave(self, who: str) -> None:
        with self.lock:
            if self.holder == who:
                self.holder = None


def _contend(url: str, who: str, namespace: str, referee: Referee, stop: threading.Event) -> None:
    with moot.connect(url, member_id=who, ttl=TTL, namespace=namespace, timeout=5) as coord:
        lock = coord.lock("contended")
        while not stop.is_set():
            try:
                if not lock.acquire(timeout=10):
                    continue
            except moot.MootError as exc:  # a node went away mid-call: try again (through a live node)
                with referee.lock:
                    referee.errors[type(exc).__name__] = referee.errors.get(type(exc).__name__, 0) + 1
                time.sleep(0.05)
                continue
            if lock.is_held:
                referee.enter(who, lock.token)
                time.sleep(0.005)
                referee.leave(who)
            with contextlib.suppress(moot.MootError):  # a node went away: the session ends it
                lock.release()


def _run(cluster: servers.Cluster, urls: list[str], seconds: float, kill: int | None = None) -> Referee:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    referee, stop = Referee(), threading.Event()
    threads = [threading.Thread(target=_contend, args=(url, f"w{i}", namespace, referee, stop), daemon=True)
               for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(referee.served) == len(urls), timeout=30, what="every worker served once")
    if kill is not None:
        before = len(referee.tokens)
        cluster.kill(cluster.members[kill])
        wait_until(lambda: len(referee.tokens) >= before + 3 * len(urls), timeout=60,
                   what="acquisitions going on after the node was killed")
        after = {who: count for who, count in referee.served.items()}
        wait_until(lambda: all(referee.served[w] > after[w] for w in after), timeout=60,
                   what="every worker served again after the kill")
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return referee


def _check(referee: Referee) -> None:
    assert not referee.overlaps, referee.overlaps
    assert all(b > a for a, b in zip(referee.tokens, referee.tokens[1:], strict=False)), referee.tokens


def test_clients_on_three_nodes_contending_never_hold_twice_and_tokens_grow(cluster: servers.Cluster) -> None:
    referee = _run(cluster, [_node_url(cluster, i) for i in range(3)], seconds=3.0)
    _check(referee)
    assert len(referee.tokens) >= 10


def test_a_node_killed_mid_run_leaves_the_clients_correct(cluster: servers.Cluster) -> None:
    # each client names all three nodes, starting with a different one: the killed node's clients move on
    urls = [_node_url(cluster, *order) for order in ((1, 2, 0), (2, 0, 1), (1, 0, 2))]
    referee = _run(cluster, urls, seconds=2.0, kill=1)
    _check(referee)
