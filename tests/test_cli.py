"""The ``moot`` command, run for real in a subprocess, against state made here
through the API: what it prints (``--json``) matches that state, errors are
one line with the documented exit status, and ``moot demo`` runs to the end.

The backend is a file:// directory under ``tmp_path`` (the ``url`` fixture
below); every test works in its own namespace, so the same tests run
unchanged against a server URL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Connect
from tests.waiting import BOUND, wait_until

pytestmark = pytest.mark.multiprocess

#: Bound on one CLI run (it connects, reads, exits: well under a second normally).
CLI_BOUND = 60.0


@pytest.fixture
def url(tmp_path: Path) -> str:
    """The backend under test: a fresh file:// directory."""
    return f"file://{tmp_path / 'coord'}"


def run_moot(*args: str, timeout: float = CLI_BOUND) -> subprocess.CompletedProcess[str]:
    """Run ``python -m moot.cli ARGS`` with no $MOOT_URL inherited."""
    env = {k: v for k, v in os.environ.items() if k != "MOOT_URL"}
    return subprocess.run([sys.executable, "-m", "moot.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def moot_json(url: str, namespace: str, *args: str) -> Any:
    """Run a read-only subcommand with ``--json``; it must succeed."""
    done = run_moot("--url", url, "--namespace", namespace, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_one_line_error(done: subprocess.CompletedProcess[str], status: int) -> None:
    assert done.returncode == status, (done.returncode, done.stderr)
    assert done.stderr.startswith("moot: "), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def test_locks_shows_holder_token_and_waiters(connect: Connect, url: str, namespace: str) -> None:
    holder, waiter, other = connect("holder-1"), connect("waiter-1"), connect("other-1")
    held = holder.lock("volume-1")
    assert held.acquire(timeout=BOUND)
    unrelated = other.lock("images/base")
    assert unrelated.acquire(timeout=BOUND)
    queued = waiter.lock("volume-1")
    acquired: list[bool] = []
    thread = threading.Thread(target=lambda: acquired.append(queued.acquire(timeout=BOUND)))
    thread.start()
    try:
        wait_until(lambda: (i := holder.lock_info("volume-1")) is not None and len(i.waiters) == 1,
                   what="the waiter queued")
        waiting_token = holder.lock_info("volume-1").waiters[0].token  # type: ignore[union-attr]

        locks = moot_json(url, namespace, "locks")
        assert [lock["name"] for lock in locks] == sorted(["volume-1", "images/base"])
        volume = next(lock for lock in locks if lock["name"] == "volume-1")
        assert (volume["holder"], volume["token"], volume["mode"]) == ("holder-1", held.token, "exclusive")
        assert volume["held_for"] >= 0 and volume["since"] is not None
        assert [(w["member"], w["token"], w["mode"]) for w in volume["waiters"]] == [
            ("waiter-1", waiting_token, "exclusive")]
        assert volume["waiters"][0]["waiting_for"] >= 0

        only = moot_json(url, namespace, "locks", "vol")
        assert [lock["name"] for lock in only] == ["volume-1"]

        text = run_moot("--url", url, "--namespace", namespace, "locks", "volume-")
        assert text.returncode == 0, text.stderr
        assert "holder-1" in text.stdout and "waiter-1" in text.stdout and str(held.token) in text.stdout
    finally:
        held.release()
        thread.join(BOUND)
    assert acquired == [True]
    queued.release()
    unrelated.release()
    assert moot_json(url, namespace, "locks") == []


def test_groups_and_members(connect: Connect, url: str, namespace: str) -> None:
    first, second = connect("conductor-1"), connect("conductor-2")
    first.group("conductors").join(capabilities={"drivers": ["ipmi", "redfish"]})
    second.group("conductors").join()
    first.group("empty").create()

    groups = moot_json(url, namespace, "groups")
    assert groups == [{"name": "conductors", "members": ["conductor-1", "conductor-2"]},
                      {"name": "empty", "members": []}]

    members = moot_json(url, namespace, "members", "conductors")
    assert [(m["member"], m["capabilities"], m["up"]) for m in members] == [
        ("conductor-1", {"drivers": ["ipmi", "redfish"]}, True),
        ("conductor-2", None, True),
    ]
    for member in members:
        assert member["joined_at"] > 0 and member["last_seen"] >= member["joined_at"] - 1

    second.group("conductors").leave()
    assert [m["member"] for m in moot_json(url, namespace, "members", "conductors")] == ["conductor-1"]
    assert moot_json(url, namespace, "members", "empty") == []

    missing = run_moot("--url", url, "--namespace", namespace, "members", "no-such-group")
    assert_one_line_error(missing, 3)
    assert missing.stdout == ""


def test_leader_and_candidates(connect: Connect, url: str, namespace: str) -> None:
    first, second = connect("scheduler-1"), connect("scheduler-2")
    leading = first.election("scheduler")
    assert leading.campaign(timeout=BOUND)
    elected: list[bool] = []
    thread = threading.Thread(target=lambda: elected.append(second.election("scheduler").campaign(BOUND)))
    thread.start()
    try:
        wait_until(lambda: len(first.election("scheduler").candidates()) == 2, what="second candidate")
        assert moot_json(url, namespace, "leader", "scheduler") == {
            "election": "scheduler", "leader": "scheduler-1", "candidates": ["scheduler-1", "scheduler-2"]}
    finally:
        leading.resign()
        thread.join(BOUND)
    assert elected == [True]
    assert moot_json(url, namespace, "leader", "scheduler")["leader"] == "scheduler-2"

    nobody = run_moot("--url", url, "--namespace", namespace, "leader", "no-such-election")
    assert_one_line_error(nobody, 3)


def test_ping(url: str, namespace: str) -> None:
    result = moot_json(url, namespace, "ping")
    assert result["reachable"] is True and result["rtt_ms"] >= 0 and result["server"]


@pytest.mark.parametrize(("bad_url", "status"), [
    ("nosuch://host", 2),
    ("not a url", 2),
    ("redis://user:s3cret@127.0.0.1:1/0", 1),
    ("etcd://user:s3cret@127.0.0.1:1", 1),
    ("file:///proc/no-such-dir/coord", 1),
])
def test_bad_or_dead_backend_is_one_line_without_secret(bad_url: str, status: int) -> None:
    for command in (["locks"], ["--json", "ping"]):
        done = run_moot("--url", bad_url, "--timeout", "3", *command)
        assert_one_line_error(done, status)
        assert "s3cret" not in done.stdout + done.stderr
        if command[-1] == "ping" and done.stdout:
            assert json.loads(done.stdout)["reachable"] is False


def test_usage_errors_exit_2() -> None:
    assert run_moot("locks", "--no-such-option").returncode == 2
    assert run_moot().returncode == 2
    assert_one_line_error(run_moot("--url", "memory://cli", "members", ""), 2)
    assert_one_line_error(run_moot("--url", "memory://cli", "--timeout", "-1", "locks"), 2)
    helped = run_moot("--help")
    assert helped.returncode == 0 and "exit status" in helped.stdout and "not found" in helped.stdout


@pytest.mark.parametrize("where", ["temporary", "given-url"])
def test_demo_runs_kills_the_leader_and_ends(url: str, namespace: str, where: str) -> None:
    args = ["demo", "--duration", "8"]
    if where == "given-url":
        args = ["--url", url, "--namespace", namespace, *args]
    done = run_moot(*args, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    shown = re.search(r"^backend: (\S+)$", out, re.MULTILINE)
    assert shown is not None, out
    killed = out.index("SIGKILL to the leader")
    assert "NEW LEADER" in out[killed:] and "gone from the group: OK" in out[killed:], out
    assert "always increasing" in out and "NOT INCREASING" not in out, out
    if where == "temporary":
        assert shown.group(1).startswith("file://")
        assert not Path(shown.group(1)[len("file://"):]).exists(), "the demo's temp dir was left behind"
    else:
        assert shown.group(1) == url
