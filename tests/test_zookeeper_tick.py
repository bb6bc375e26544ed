"""ZooKeeper sessions end within their TTL (README guarantee 4) although the
server expires them on its tick: the backend asks for the TTL less one tick,
which it reads from the smallest session timeout the server grants
(``moot/backends/zookeeper/tick.py``).

A dedicated server ticks every second with ZooKeeper's default
``minSessionTimeout`` (two ticks), as a production server does every 2 s:
a tick long enough for its rounding to show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from moot.backends.zookeeper import ZooKeeperBackend
from moot.backends.zookeeper.tick import smallest_session_timeout
from moot.url import parse_url
from moot.waits import Wake
from tests import servers
from tests.conftest import MakeBackend

TICK = 1.0  # the dedicated server's tickTime, in seconds
SLACK = 0.25  # the server's expiry work and the deletion's notification, on a loaded machine


class SlowTickZooKeeper(servers.ZooKeeper):
    """The test suite's ZooKeeper with a 1 s tick and the default minSessionTimeout."""

    name = "zookeeper-tick"

    def argv(self, member: servers.Member, peers: Sequence[servers.Member]) -> list[str]:
        argv = super().argv(member, peers)
        config = member.directory / "zoo.cfg"
        lines = config.read_text().splitlines()
        assert "tickTime=250" in lines and "minSessionTimeout=500" in lines
        lines = [f"tickTime={int(TICK * 1000)}" if line == "tickTime=250" else line
                 for line in lines if line != "minSessionTimeout=500"]
        config.write_text("\n".join(lines) + "\n")
        return argv


@pytest.fixture(scope="module")
def slow_tick() -> Iterator[servers.Cluster]:
    with servers.own_cluster(SlowTickZooKeeper()) as cluster:
        yield cluster


def peer(url: str) -> tuple[str, int]:
    return parse_url(url).host_port(2181, 0)


def mntr(url: str, field: str) -> int:
    """One number of the server's ``mntr`` answer."""
    answer = servers._tcp_exchange(peer(url)[1], b"mntr")
    for line in answer.decode().splitlines():
        name, _, value = line.partition("\t")
        if name == field:
            return int(value)
    raise AssertionError(f"no {field} in mntr's answer {answer!r}")


def test_the_tick_is_read_from_the_smallest_session_timeout_and_that_session_is_closed(
        slow_tick: servers.Cluster, server: Callable[[str], str]) -> None:
    suite = server("zookeeper")  # tickTime=250, minSessionTimeout=500
    assert smallest_session_timeout(peer(suite), 5.0, None, "127.0.0.1") == 0.5
    before = mntr(slow_tick.url, "zk_global_sessions")
    assert smallest_session_timeout(peer(slow_tick.url), 5.0, None, "127.0.0.1") == 2 * TICK
    assert mntr(slow_tick.url, "zk_global_sessions") == before, "the probe's session was left open"


def test_a_session_is_asked_for_its_ttl_less_one_tick(slow_tick: servers.Cluster,
                                                     open_backend: MakeBackend) -> None:
    backend = open_backend(slow_tick.url, ttl=5.0)
    assert isinstance(backend, ZooKeeperBackend)
    assert backend.granted_ttl == 5.0 - TICK
    shortest = open_backend(slow_tick.url, ttl=2.5)  # less one tick is below the two-tick minimum: raised
    assert shortest.granted_ttl == 2 * TICK


HOLDER = """
import sys, time
from moot.backends.zookeeper import ZooKeeperBackend
from moot.url import parse_url
backend = ZooKeeperBackend(parse_url(sys.argv[1]), {"ttl": sys.argv[3]})
backend.connect(10.0)
backend.open_session(float(sys.argv[3]))
backend.create(sys.argv[2], b"held", ephemeral=True)
backend.refresh_session()  # a round trip: the server heard from this process just now
print("ready", flush=True)
time.sleep(60)
"""


def test_a_sigkilled_holders_key_goes_within_its_ttl(slow_tick: servers.Cluster, open_backend: MakeBackend,
                                                     tmp_path: Path) -> None:
    """Killed right after a round trip, the holder's session would last its
    TTL plus up to a tick if asked for the TTL; asked for the TTL less a
    tick, its key goes within the TTL."""
    ttl = 3.0
    key = f"t-{uuid.uuid4().hex[:12]}/held"
    watcher = open_backend(slow_tick.url, ttl=5.0)
    root = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, slow_tick.url, key, str(ttl)], cwd=root,
                              env={**os.environ, "PYTHONPATH": str(root)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        held = watcher.get(key)
        assert held is not None
        gone = Wake()
        watch, unchanged = watcher.watch_unchanged(held, gone.set)
        assert unchanged
        killed = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        while watcher.get(key) is not None:  # a watch may call back spuriously: read again
            left = killed + ttl + TICK + 2 - time.monotonic()
            assert left > 0, "the killed holder's key never went"
            gone.wait(left)
            gone.clear()
        freed = time.monotonic() - killed
        watch.cancel()
        assert freed <= ttl + SLACK, f"the killed holder's key went {freed:.2f}s after the kill, past its {ttl}s TTL"
    finally:
        holder.kill()
        holder.wait(10)
