"""docs/examples/asyncio_service.py, run for real: three replicas of the
aiohttp service as OS processes on one URL (a file:// directory, and the
run's shared Redis server), driven over HTTP.

Checked: exactly one leader, reported alike by all three, whose periodic job
runs; concurrent resizes of one volume sent to all three are served one at a
time, with distinct fencing tokens that grow in acquisition order; after the
leader is killed (SIGKILL) another replica leads (with a greater token) and
the dead one leaves the group within the session TTL plus a slack; SIGTERM
stops the others cleanly (exit status 0, the group left).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import moot
from tests.waiting import BOUND, wait_until

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "asyncio_service.py"
#: The replicas' session TTL (in their URL): short, so that a killed leader is
#: replaced quickly on Redis too (at once on file://, where its flock goes).
TTL = 1.0
#: On top of the TTL, for the takeover on a slow, loaded machine: the
#: survivor's wake-up, its round trips, and this test's polling.
TAKEOVER_SLACK = 5.0
REPLICAS = 3
RESIZES_PER_REPLICA = 3

_LISTENING = re.compile(r": listening on (http://\S+)")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Replica:
    """One replica process, its log, and its HTTP address once it listens."""

    def __init__(self, member_id: str, url: str, log: Path):
        self.member_id = member_id
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "MOOT_URL"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        with log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, str(EXAMPLE), "0", url, "--member-id", member_id],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            env=env, cwd=log.parent)
        self.address: str | None = None

    def __repr__(self) -> str:
        return f"<Replica {self.member_id} pid={self.process.pid} {self.address}>"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def listening(self) -> bool:
        """True once it logged its address; fails the test at once if it died."""
        if self.address is None:
            found = _LISTENING.search(self.output())
            self.address = found.group(1) if found else None
        if self.address is None and self.process.poll() is not None:
            raise AssertionError(f"{self.member_id} exited with {self.process.returncode}:\n{self.output()}")
        return self.address is not None

    def request(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.address}{path}", method=method)
        with _NO_PROXY.open(request, timeout=BOUND) as response:
            return json.loads(response.read())

    def status(self) -> dict[str, Any] | None:
        """Its GET /status, or None while it cannot answer (e.g. 503: its engine is away)."""
        try:
            result: dict[str, Any] = self.request("GET", "/status")
        except (OSError, urllib.error.HTTPError):
            return None
        return result

    def stop(self, signum: int) -> int:
        """Send ``signum``; return the exit status (bounded wait, SIGKILL after it)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=BOUND)
            raise AssertionError(f"{self.member_id} did not stop on signal {signum}:\n{self.output()}") from None


@pytest.fixture(params=["file", "redis"])
def service_url(request: pytest.FixtureRequest, tmp_path: Path, server: Callable[[str], str]) -> str:
    """The replicas' URL: a file:// directory or the run's Redis, a fresh namespace, ttl=TTL."""
    base = f"file://{tmp_path / 'coord'}" if request.param == "file" else server(request.param)
    return f"{base}{'&' if '?' in base else '?'}ttl={TTL}&namespace=t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def replicas(service_url: str, tmp_path: Path) -> Iterator[list[Replica]]:
    """Three replicas, listening; all stopped after the test, whatever happened."""
    started: list[Replica] = []
    try:
        for n in range(1, REPLICAS + 1):
            started.append(Replica(f"replica-{n}", service_url, tmp_path / f"replica-{n}.log"))
        wait_until(lambda: all([replica.listening() for replica in started]), what="the replicas to listen")
        yield started
    finally:
        for replica in started:
            with contextlib.suppress(AssertionError):
                replica.stop(signal.SIGKILL)


def wait_for_state(replicas: list[Replica], agreed: Callable[[dict[str, dict[str, Any]]], bool],
                   timeout: float, what: str) -> dict[str, dict[str, Any]]:
    """Poll every replica's /status until ``agreed({member_id: status})``;
    return those statuses. Fails with the last ones seen after ``timeout``."""
    seen: dict[str, dict[str, Any]] = {}

    def check() -> bool:
        seen.clear()
        for replica in replicas:
            status = replica.status()
            if status is None:
                return False
            seen[replica.member_id] = status
        return agreed(seen)

    try:
        wait_until(check, timeout=timeout, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}; last statuses seen: {json.dumps(seen, indent=1)}") from None
    return dict(seen)


def one_leader(statuses: dict[str, dict[str, Any]], expected_members: set[str]) -> bool:
    """All agree on one leader among them, which says it leads and ticks; the group is exactly those expected."""
    leaders = {status["leader"] for status in statuses.values()}
    if len(leaders) != 1 or (leader := leaders.pop()) not in statuses:
        return False
    leading = {member_id for member_id, status in statuses.items() if status["is_leader"]}
    return (leading == {leader} and statuses[leader]["ticks"]["count"] > 0
            and all(set(status["members"]) == expected_members for status in statuses.values()))


def test_replicas_elect_one_leader_share_locks_and_take_over(replicas: list[Replica], service_url: str) -> None:
    by_id = {replica.member_id: replica for replica in replicas}

    statuses = wait_for_state(replicas, lambda seen: one_leader(seen, set(by_id)), BOUND, "exactly one leader")
    leader = by_id[next(iter(statuses.values()))["leader"]]
    for member_id, status in statuses.items():  # each joined with its own address
        assert status["members"][member_id] == {"address": by_id[member_id].address}

    # Concurrent resizes of one volume through every replica: one at a time, fenced.
    with concurrent.futures.ThreadPoolExecutor(REPLICAS * RESIZES_PER_REPLICA) as pool:
        sent = [pool.submit(replica.request, "POST", "/volumes/42/resize")
                for replica in replicas for _ in range(RESIZES_PER_REPLICA)]
        done = [future.result(timeout=BOUND) for future in sent]
    assert {result["replica"] for result in done} == set(by_id)
    tokens = [result["token"] for result in done]
    assert len(set(tokens)) == len(tokens) and all(isinstance(t, int) and t > 0 for t in tokens), tokens
    in_order = sorted(done, key=lambda result: result["started"])
    for before, after in itertools.pairwise(in_order):
        assert after["token"] > before["token"], in_order  # tokens grow in acquisition order
        assert after["started"] >= before["finished"], in_order  # and holds never overlap

    # The leader dies without a word: another takes over within the TTL (plus slack).
    old_token = statuses[leader.member_id]["ticks"]["token"]
    assert isinstance(old_token, int) and old_token > 0
    killed_at = time.monotonic()
    assert leader.stop(signal.SIGKILL) == -signal.SIGKILL
    survivors = [replica for replica in replicas if replica is not leader]
    alive = {replica.member_id for replica in survivors}

    def taken_over(seen: dict[str, dict[str, Any]]) -> bool:
        return one_leader(seen, alive) and seen[next(iter(seen.values()))["leader"]]["ticks"]["token"] > old_token

    statuses = wait_for_state(survivors, taken_over, TTL + TAKEOVER_SLACK, "another leader")
    assert time.monotonic() - killed_at <= TTL + TAKEOVER_SLACK

    # SIGTERM: each survivor withdraws, leaves the group and ends its session.
    for replica in survivors:
        assert replica.stop(signal.SIGTERM) == 0, replica.output()
    with moot.connect(service_url, member_id="test-observer") as coord:
        assert coord.group("replicas").members() == {}
        assert coord.election("scheduler").leader() is None
