"""The bench's counters and workload plumbing (not its timings: speed lives in bench/ runs)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import redis
from tooz import coordination

from bench import cli
from bench.engines import RequestCounter
from bench.systems import tooz_url
from bench.workloads import KILL_TTL, Params, members


def test_the_redis_counter_counts_the_commands_of_its_window_and_no_later_one(server: Callable[[str], str]) -> None:
    url = server("redis")
    host, port = url.split("://", 1)[1].split("/")[0].rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    key = f"bench-test-{uuid.uuid4().hex}"
    client.ping()  # the connection's own setup commands come before the window
    counter = RequestCounter("redis", url)
    try:
        counter.start()
        for _ in range(7):
            client.get(key)
        assert counter.stop() == 7
        counter.start()
        assert counter.stop() == 0
    finally:
        client.close()


def test_tooz_gets_moots_ttl_as_its_lock_and_membership_timeouts_in_the_kill_workload() -> None:
    assert tooz_url("redis://127.0.0.1:6380") == "redis://127.0.0.1:6380"  # tooz's defaults elsewhere
    assert tooz_url("postgresql://u@127.0.0.1:5433/db", KILL_TTL) == "postgresql://u@127.0.0.1:5433/db"
    for url in ("redis://127.0.0.1:6380", "etcd://127.0.0.1:2380", "memcached://127.0.0.1:11212"):
        translated = tooz_url(url, KILL_TTL)
        assert translated is not None
        driver = coordination.get_coordinator(translated, b"reader")  # parses its options, connects on start()
        assert (driver.lock_timeout, driver.membership_timeout) == (KILL_TTL, KILL_TTL), translated
    translated = tooz_url("zookeeper://127.0.0.1:2182", KILL_TTL)
    assert translated is not None
    assert coordination.get_coordinator(translated, b"reader").timeout == KILL_TTL


def test_the_members_workload_lists_every_member_and_returns_once_its_hosts_closed() -> None:
    notes: list[str] = []
    params = Params(members=30, members_calls=5, members_seconds=1.0)
    result = members("moot", "memory", f"memory://bench-{uuid.uuid4().hex}", params, notes.append)
    assert (result["members"], result["listed"], result["calls"], result["errors"]) == (30, 30, 5, [])
    assert notes[0].startswith("30 members joined")


def test_progress_keeps_every_steps_duration_and_sums_them() -> None:
    progress = cli.Progress(2)
    progress.begin("redis", "moot", "kill")
    progress.end("done")
    progress.begin("redis", "tooz", "kill")
    progress.end("done")
    assert [row[:3] for row in progress.durations] == [["redis", "moot", "kill"], ["redis", "tooz", "kill"]]
    assert progress.summary().splitlines()[0].startswith("time per workload: kill ")
