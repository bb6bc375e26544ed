"""The ``moot`` command, run for real in a subprocess, against state made here
through the API: what it prints (``--json``) matches that state, errors are
one line with the documented exit status, ``moot watch`` shows every change,
and ``moot demo`` runs to the end.

The backend is every selected one but memory:// (the ``url`` fixture of
conftest: a file:// directory, redis, ZooKeeper, etcd); every test works in
its own namespace.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

import moot
from tests import servers
from tests.conftest import Connect
from tests.waiting import BOUND, wait_until

pytestmark = pytest.mark.multiprocess

#: Bound on one CLI run (it connects, reads, exits: well under a second normally).
CLI_BOUND = 60.0
#: ``moot watch --interval`` for tests whose changes must come from the backend's
#: watches: no periodic re-read happens while the test runs.
NO_POLLING = "600"


@pytest.fixture
def demo_url(tmp_path: Path) -> str:
    """A fresh file:// directory for ``moot demo --url``."""
    return f"file://{tmp_path / 'coord'}"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MOOT_URL"}


def run_moot(*args: str, timeout: float = CLI_BOUND) -> subprocess.CompletedProcess[str]:
    """Run ``python -m moot.cli ARGS`` with no $MOOT_URL inherited."""
    return subprocess.run([sys.executable, "-m", "moot.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), check=False)


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
        assert [(h["member"], h["token"], h["mode"]) for h in volume["holders"]] == [
            ("holder-1", held.token, "exclusive")]
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


def test_locks_shows_every_shared_holder(connect: Connect, url: str, namespace: str) -> None:
    readers = [connect(f"reader-{i}").rwlock("catalog") for i in (1, 2)]
    for reader in readers:
        assert reader.acquire_read(timeout=BOUND)
    writer = connect("writer-1").lock("catalog")
    thread = threading.Thread(target=writer.acquire, kwargs={"timeout": BOUND})
    thread.start()
    try:
        wait_until(lambda: len(moot_json(url, namespace, "locks")[0]["waiters"]) == 1, what="the writer queued")
        [catalog] = moot_json(url, namespace, "locks")
        assert [(h["member"], h["token"], h["mode"]) for h in catalog["holders"]] == [
            ("reader-1", readers[0].token, "shared"), ("reader-2", readers[1].token, "shared")]
        assert [(w["member"], w["mode"]) for w in catalog["waiters"]] == [("writer-1", "exclusive")]
        text = run_moot("--url", url, "--namespace", namespace, "locks").stdout.splitlines()
        tokens = [str(reader.token) for reader in readers] + [str(catalog["waiters"][0]["token"])]
        assert [line.split()[:-1] for line in text[1:]] == [  # the last column: how long
            ["catalog", "reader-1", "holds", tokens[0], "shared"], ["reader-2", "holds", tokens[1], "shared"],
            ["writer-1", "waits", "#1", tokens[2], "exclusive"]]
    finally:
        for reader in readers:
            reader.release()
        thread.join(BOUND)
    writer.release()


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
        if command[-1] == "ping":  # the JSON answer comes along with the error
            answer = json.loads(done.stdout)
            assert answer["reachable"] is False and answer["error"], answer
            assert answer["url"] == bad_url.replace("s3cret", "***"), answer
        else:
            assert done.stdout == ""


def test_usage_errors_exit_2() -> None:
    assert run_moot("locks", "--no-such-option").returncode == 2
    assert run_moot().returncode == 2
    assert_one_line_error(run_moot("--url", "memory://cli", "members", ""), 2)
    assert_one_line_error(run_moot("--url", "memory://cli", "--timeout", "-1", "locks"), 2)
    helped = run_moot("--help")
    assert helped.returncode == 0 and "exit status" in helped.stdout and "not found" in helped.stdout


@pytest.mark.parametrize("where", ["temporary", "given-url"])
def test_demo_runs_kills_the_leader_and_ends(demo_url: str, namespace: str, where: str) -> None:
    args = ["demo", "--duration", "8"]
    if where == "given-url":
        args = ["--url", demo_url, "--namespace", namespace, *args]
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
        assert shown.group(1) == demo_url


# -- moot watch and -v ------------------------------------------------------------------
class Running:
    """A ``moot`` command left running; its output lines are read with a bound."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "moot.cli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=_env())
        self._out: queue.Queue[str | None] = queue.Queue()
        self._err: queue.Queue[str | None] = queue.Queue()
        for stream, lines in ((self.proc.stdout, self._out), (self.proc.stderr, self._err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _read(stream: Any, lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def line(self) -> str:
        """The next line of output; fails the test if none comes within BOUND."""
        return self._next(self._out, "output")

    def err_line(self) -> str:
        """The next line on stderr; fails the test if none comes within BOUND."""
        return self._next(self._err, "stderr")

    def _next(self, lines: queue.Queue[str | None], what: str) -> str:
        try:
            line = lines.get(timeout=BOUND)
        except queue.Empty:
            raise AssertionError(f"no {what} from moot within {BOUND}s") from None
        assert line is not None, f"moot ended early with status {self.finish()}"
        return line

    def states(self, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """JSON lines up to the first for which ``until`` is true (included)."""
        seen = [json.loads(self.line())]
        while not until(seen[-1]):
            seen.append(json.loads(self.line()))
        return seen

    def finish(self) -> int:
        return self.proc.wait(CLI_BOUND)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(CLI_BOUND)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def stable(state: dict[str, Any]) -> str:
    """A watch state without what changes with the clock alone."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()
                    if k not in ("time", "held_for", "waiting_for", "last_seen")}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return json.dumps(strip(state), sort_keys=True)


def assert_each_shows_a_change(states: list[dict[str, Any]]) -> None:
    assert all(stable(a) != stable(b) for a, b in itertools.pairwise(states)), states


def lock_rows(state: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(lock["name"], lock["holder"], lock["token"], lock["mode"],
             [(w["member"], w["token"], w["mode"]) for w in lock["waiters"]]) for lock in state["locks"]]


def test_watch_json_shows_every_lock_change_and_join(connect: Connect, url: str, namespace: str) -> None:
    holder, waiter = connect("holder-1"), connect("waiter-1")
    held = holder.lock("volume-1")
    assert held.acquire(timeout=BOUND)
    base = ["--url", url, "--namespace", namespace, "--json", "watch"]
    queued = waiter.lock("volume-1")
    acquired: list[bool] = []
    thread = threading.Thread(target=lambda: acquired.append(queued.acquire(timeout=BOUND)))
    with Running(*base, "locks", "volume-", "--interval", NO_POLLING) as locks, \
            Running(*base, "group", "workers", "--interval", NO_POLLING) as group:
        first = json.loads(locks.line())
        assert first["view"] == "locks" and first["prefix"] == "volume-" and first["time"] > 0
        assert lock_rows(first) == [("volume-1", "holder-1", held.token, "exclusive", [])]
        assert json.loads(group.line()) | {"time": 0} == {
            "time": 0, "view": "group", "group": "workers", "exists": False, "members": []}

        thread.start()  # a waiter queues up
        wait_until(lambda: len(holder.lock_info("volume-1").waiters) == 1,  # type: ignore[union-attr]
                   what="the waiter queued")
        waiting_token = holder.lock_info("volume-1").waiters[0].token  # type: ignore[union-attr]
        seen = locks.states(lambda s: bool(s["locks"] and s["locks"][0]["waiters"]))
        assert lock_rows(seen[-1]) == [("volume-1", "holder-1", held.token, "exclusive",
                                        [("waiter-1", waiting_token, "exclusive")])]
        assert seen[-1]["locks"][0]["waiters"][0]["waiting_for"] >= 0

        holder.group("workers").join(capabilities={"slots": 4})  # a join
        joined = group.states(lambda s: bool(s["members"]))
        assert [(m["member"], m["capabilities"], m["up"]) for m in joined[-1]["members"]] == [
            ("holder-1", {"slots": 4}, True)]

        held.release()  # the lock changes hands
        thread.join(BOUND)
        assert acquired == [True]
        seen += locks.states(lambda s: bool(s["locks"]) and s["locks"][0]["holder"] == "waiter-1")
        assert lock_rows(seen[-1]) == [("volume-1", "waiter-1", waiting_token, "exclusive", [])]

        queued.release()
        seen += locks.states(lambda s: s["locks"] == [])
        holder.group("workers").leave()
        joined += group.states(lambda s: s["exists"] and not s["members"])

        assert_each_shows_a_change([first, *seen])
        assert_each_shows_a_change(joined)
        locks.proc.send_signal(signal.SIGTERM)
        group.proc.send_signal(signal.SIGINT)
        assert (locks.finish(), group.finish()) == (0, 0)


def test_watch_leader_shows_each_new_leader(connect: Connect, url: str, namespace: str) -> None:
    first, second = connect("scheduler-1"), connect("scheduler-2")
    leading, following = first.election("scheduler"), second.election("scheduler")
    elected: list[bool] = []
    thread = threading.Thread(target=lambda: elected.append(following.campaign(BOUND)))
    with Running("--url", url, "--namespace", namespace, "--json", "watch", "leader", "scheduler",
                 "--interval", NO_POLLING) as watch:
        assert json.loads(watch.line()) | {"time": 0} == {
            "time": 0, "view": "leader", "election": "scheduler", "leader": None, "candidates": []}
        assert leading.campaign(timeout=BOUND)
        seen = watch.states(lambda s: s["leader"] == "scheduler-1")
        assert seen[-1]["candidates"] == ["scheduler-1"]
        thread.start()
        wait_until(lambda: len(first.election("scheduler").candidates()) == 2, what="second candidate")
        leading.resign()  # the leader changes
        thread.join(BOUND)
        assert elected == [True]
        seen += watch.states(lambda s: s["leader"] == "scheduler-2")
        assert seen[-1]["candidates"] == ["scheduler-2"]
        assert following.resign()
        seen += watch.states(lambda s: s["leader"] is None)
        assert_each_shows_a_change(seen)
        watch.proc.send_signal(signal.SIGTERM)
        assert watch.finish() == 0


def test_watch_count_and_new_names(connect: Connect, url: str, namespace: str) -> None:
    coord = connect("newcomer-1")
    with Running("--url", url, "--namespace", namespace, "--json", "watch", "locks", "--count", "2",
                 "--interval", "0.1") as locks, \
            Running("--url", url, "--namespace", namespace, "--json", "watch", "groups", "--count", "2",
                    "--interval", "0.1") as groups:
        assert json.loads(locks.line())["locks"] == []
        assert json.loads(groups.line())["groups"] == []
        lock = coord.lock("brand-new")
        assert lock.acquire(timeout=BOUND)
        coord.group("fresh").join()
        assert lock_rows(json.loads(locks.line())) == [("brand-new", "newcomer-1", lock.token, "exclusive", [])]
        assert json.loads(groups.line())["groups"] == [{"name": "fresh", "members": ["newcomer-1"]}]
        assert (locks.finish(), groups.finish()) == (0, 0)  # --count 2: done


def test_watch_text_until_sigterm(connect: Connect, url: str, namespace: str) -> None:
    holder = connect("holder-1")
    held = holder.lock("volume-7")
    assert held.acquire(timeout=BOUND)
    with Running("--url", url, "--namespace", namespace, "watch", "locks") as text:
        header = text.line()
        assert re.fullmatch(r"-- \d\d:\d\d:\d\d locks\n", header), header
        assert text.line().split() == ["LOCK", "MEMBER", "STATE", "TOKEN", "MODE", "FOR"]
        assert text.line().split()[:5] == ["volume-7", "holder-1", "holds", str(held.token), "exclusive"]
        text.proc.send_signal(signal.SIGTERM)
        assert text.finish() == 0
    done = run_moot("--url", url, "--namespace", namespace, "watch", "groups", "--duration", "0.2")
    assert done.returncode == 0 and "no group in namespace" in done.stdout, done.stderr


def test_watch_carries_on_through_an_outage(namespace: str) -> None:
    cluster = servers.start_cluster("redis", size=1)  # a server of its own: it is killed
    try:
        with Running("--url", cluster.url, "--namespace", namespace, "--json", "watch", "locks",
                     "--interval", "0.2") as watch:
            assert json.loads(watch.line())["locks"] == []
            member = cluster.members[0]
            cluster.kill(member)
            trouble = watch.err_line()
            assert trouble.startswith("moot: ") and trouble.endswith(" (retrying)\n"), trouble
            cluster.restart(member)
            assert watch.err_line() == "moot: backend reachable again\n"
            with moot.connect(cluster.url, member_id="after-1", namespace=namespace, ttl=2) as coord, \
                    coord.lock("after-outage", timeout=BOUND) as held:
                assert lock_rows(json.loads(watch.line())) == [
                    ("after-outage", "after-1", held.token, "exclusive", [])]
            watch.proc.send_signal(signal.SIGTERM)
            assert watch.finish() == 0
    finally:
        cluster.stop()


def test_watch_usage_errors() -> None:
    assert_one_line_error(run_moot("--url", "memory://cli", "watch", "group"), 2)
    assert_one_line_error(run_moot("--url", "memory://cli", "watch", "groups", "extra"), 2)
    assert_one_line_error(run_moot("--url", "memory://cli", "watch", "leader"), 2)
    for bad in (["--count", "0"], ["--duration", "-1"], ["--interval", "nan"], ["nosuchview"]):
        assert run_moot("--url", "memory://cli", "watch", *bad).returncode == 2


def with_password(url: str, backend: str, password: str) -> str:
    """``url`` with credentials that the test server accepts (or, for etcd with
    authentication off, refuses with a usage error)."""
    scheme, rest = url.split("://", 1)
    given = ""
    if "@" in rest.split("/", 1)[0]:  # the test server's own user (postgres@, root@): keep it
        given, rest = rest.split("@", 1)
    user = given or {"redis": "default"}.get(backend, "user")  # redis: its default user takes any password
    if backend == "zookeeper":  # digest ACLs on what it creates: a chroot of its own
        rest = rest.split("/", 1)[0] + f"/moot-secret-{uuid.uuid4().hex[:8]}"
    return f"{scheme}://{user}:{password}@{rest}"


def test_verbose_log_never_shows_the_password(url: str, backend: str, namespace: str) -> None:
    secret = f"s3cret-{uuid.uuid4().hex[:6]}"
    done = run_moot("-v", "--url", with_password(url, backend, secret), "--namespace", namespace, "locks")
    # mysql: the test server's root has no password, so the one given is refused (exit 1)
    assert done.returncode == {"etcd": 2, "mysql": 1}.get(backend, 0), done.stderr
    assert secret not in done.stdout + done.stderr  # kazoo logs its digest login at DEBUG
