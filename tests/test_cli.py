"""The ``moot`` command, run for real in a subprocess, against state made here
through the API: what it prints (``--json``) matches that state, errors are
one line with the documented exit status, ``moot watch`` shows every change,
and ``moot demo`` runs to the end.

The backend is every selected one but memory:// (the ``url`` fixture of
conftest: a file:// directory, redis, ZooKeeper, etcd); every test works in
its own namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import shlex
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


#: The checkout: where ``make demo`` runs, and so where the demo's hint must work.
ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MOOT_URL"} | extra


def run_moot(*args: str, timeout: float = CLI_BOUND, module: str = "moot.cli",
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m moot.cli ARGS`` with no $MOOT_URL inherited."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, env=_env() if env is None else env, check=False)


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
    thread = threading.Thread(target=lambda: elected.append(bool(second.election("scheduler").campaign(BOUND))))
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

    def __init__(self, *args: str, argv: list[str] | None = None, cwd: Path | None = None):
        """Runs ``python -m moot.cli ARGS``, or ``argv`` as given."""
        command = [sys.executable, "-m", "moot.cli", *args] if argv is None else argv
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=_env(), cwd=cwd)
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
            other = self._err if lines is self._out else self._out
            said = []
            with contextlib.suppress(queue.Empty):
                while (item := other.get_nowait()) is not None:
                    said.append(item)
            raise AssertionError(f"no {what} from moot within {BOUND}s; meanwhile it printed: {''.join(said)!r}"
                                 ) from None
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
    thread = threading.Thread(target=lambda: elected.append(bool(following.campaign(BOUND))))
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
    # mysql: the test server's root has no password, so the one given is refused (AuthenticationFailed: exit 2)
    assert done.returncode == {"etcd": 2, "mysql": 2}.get(backend, 0), done.stderr
    assert secret not in done.stdout + done.stderr  # kazoo logs its digest login at DEBUG


# -- semaphores, elections, python -m moot, names that are hard to print, file:// reads, the demo's hint --
def test_semaphores_listed(connect: Connect, url: str, namespace: str) -> None:
    first, second, third = connect("pool-1"), connect("pool-2"), connect("pool-3")
    holders = [first.semaphore("workers-pool", 2), second.semaphore("workers-pool", 2)]
    for sem in holders:
        assert sem.acquire(timeout=BOUND)
    other = first.semaphore("other", 1)
    assert other.acquire(timeout=BOUND)
    queued = third.semaphore("workers-pool", 2)
    acquired: list[bool] = []
    thread = threading.Thread(target=lambda: acquired.append(queued.acquire(timeout=BOUND)))
    thread.start()
    try:
        wait_until(lambda: len(first.semaphore("workers-pool", 2).info().waiters) == 1, what="the waiter queued")
        waiting_token = first.semaphore("workers-pool", 2).info().waiters[0].token
        listed = moot_json(url, namespace, "semaphores")
        assert [sem["name"] for sem in listed] == ["other", "workers-pool"]
        pool = listed[1]
        assert pool["limit"] == 2
        assert [(h["member"], h["token"]) for h in pool["holders"]] == [
            ("pool-1", holders[0].token), ("pool-2", holders[1].token)]
        assert all(h["held_for"] >= 0 and h["since"] > 0 for h in pool["holders"])
        assert [(w["member"], w["token"]) for w in pool["waiters"]] == [("pool-3", waiting_token)]
        assert pool["waiters"][0]["waiting_for"] >= 0
        assert [sem["name"] for sem in moot_json(url, namespace, "semaphores", "work")] == ["workers-pool"]

        text = run_moot("--url", url, "--namespace", namespace, "semaphores", "work")
        assert text.returncode == 0, text.stderr
        assert [line.split()[:-1] for line in text.stdout.splitlines()] == [  # the last column: how long
            ["SEMAPHORE", "LIMIT", "MEMBER", "STATE", "TOKEN"],
            ["workers-pool", "2", "pool-1", "holds", str(holders[0].token)],
            ["pool-2", "holds", str(holders[1].token)],
            ["pool-3", "waits", "#1", str(waiting_token)]]
    finally:
        holders[0].release()
        thread.join(BOUND)
    assert acquired == [True]
    for sem in (holders[1], queued, other):
        sem.release()
    assert moot_json(url, namespace, "semaphores") == []
    empty = run_moot("--url", url, "--namespace", namespace, "semaphores")
    assert empty.returncode == 0 and "no semaphore is held or waited for" in empty.stdout, empty.stderr


def test_elections_listed(connect: Connect, url: str, namespace: str) -> None:
    first, second, third = connect("sched-1"), connect("sched-2"), connect("api-1")
    leading = first.election("scheduler")
    assert leading.campaign(timeout=BOUND)
    api = third.election("api")
    assert api.campaign(timeout=BOUND)
    following = second.election("scheduler")
    elected: list[bool] = []
    thread = threading.Thread(target=lambda: elected.append(bool(following.campaign(BOUND))))
    thread.start()
    try:
        wait_until(lambda: len(first.election("scheduler").candidates()) == 2, what="second candidate")
        listed = moot_json(url, namespace, "elections")
        assert [(e["name"], e["leader"], e["token"], e["candidates"]) for e in listed] == [
            ("api", "api-1", api.token, ["api-1"]),
            ("scheduler", "sched-1", leading.token, ["sched-1", "sched-2"])]
        assert all(e["leading_for"] >= 0 and e["since"] > 0 for e in listed)
        assert [e["name"] for e in moot_json(url, namespace, "elections", "sch")] == ["scheduler"]
        text = run_moot("--url", url, "--namespace", namespace, "elections")
        assert text.returncode == 0, text.stderr
        rows = [line.split() for line in text.stdout.splitlines()]
        assert rows[0] == ["ELECTION", "LEADER", "TOKEN", "FOR", "WAITING"]
        assert [row[:3] + row[4:] for row in rows[1:]] == [  # row[3]: how long it has led
            ["api", "api-1", str(listed[0]["token"]), "-"],
            ["scheduler", "sched-1", str(leading.token), "sched-2"]]
    finally:
        leading.resign()
        thread.join(BOUND)
    assert elected == [True]
    [_, scheduler] = moot_json(url, namespace, "elections")
    assert (scheduler["leader"], scheduler["token"], scheduler["candidates"]) == (
        "sched-2", following.token, ["sched-2"])
    following.resign()
    api.resign()
    assert moot_json(url, namespace, "elections") == []


def test_watch_semaphores_and_elections(connect: Connect, url: str, namespace: str) -> None:
    coord = connect("watched-1")
    base = ["--url", url, "--namespace", namespace, "--json", "watch"]
    with Running(*base, "semaphores", "--interval", "0.2") as sems, \
            Running(*base, "elections", "--interval", "0.2") as elections:
        assert json.loads(sems.line()) | {"time": 0} == {
            "time": 0, "view": "semaphores", "prefix": "", "semaphores": []}
        assert json.loads(elections.line())["elections"] == []
        sem = coord.semaphore("slots", 3)
        assert sem.acquire(timeout=BOUND)
        election = coord.election("boss")
        assert election.campaign(timeout=BOUND)
        seen = sems.states(lambda s: bool(s["semaphores"]))
        assert [(s["name"], s["limit"], [h["token"] for h in s["holders"]]) for s in seen[-1]["semaphores"]] == [
            ("slots", 3, [sem.token])]
        chosen = elections.states(lambda s: bool(s["elections"]))
        assert [(e["name"], e["leader"], e["token"]) for e in chosen[-1]["elections"]] == [
            ("boss", "watched-1", election.token)]
        sem.release()
        election.resign()
        seen += sems.states(lambda s: s["semaphores"] == [])
        chosen += elections.states(lambda s: s["elections"] == [])
        assert_each_shows_a_change(seen)
        assert_each_shows_a_change(chosen)
        sems.proc.send_signal(signal.SIGTERM)
        elections.proc.send_signal(signal.SIGTERM)
        assert (sems.finish(), elections.finish()) == (0, 0)


def test_python_dash_m_moot(connect: Connect, url: str, namespace: str) -> None:
    connect("member-1").group("crew").join()
    done = run_moot("--url", url, "--namespace", namespace, "--json", "groups", module="moot")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"name": "crew", "members": ["member-1"]}]
    helped = run_moot("--help", module="moot")
    assert helped.returncode == 0 and "semaphores" in helped.stdout and "elections" in helped.stdout
    assert_one_line_error(run_moot("--url", "nosuch://x", "locks", module="moot"), 2)


#: Names a table must show on one line each, escaped, and aligned by how wide they print.
HARD_NAMES = {
    "escape": "red\x1b[31m\x1b[2J",  # would colour the terminal and clear the screen
    "newline": "two\nlines\r",
    "bidi": "abc\u202edcba",  # a right-to-left override reverses what follows it
    "wide": "ロック-日本",  # two columns per character
    "combining": "cafe\u0301",  # the accent takes no column
}


def test_tables_escape_control_characters_and_align_wide_ones(connect: Connect, url: str, namespace: str) -> None:
    from moot.cli.output import display_width

    held = []
    for kind, name in HARD_NAMES.items():
        lock = connect(f"{kind}-{name}").lock(name)
        assert lock.acquire(timeout=BOUND)
        held.append(lock)
    done = run_moot("--url", url, "--namespace", namespace, "locks")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 + len(HARD_NAMES), lines  # no name broke a line
    for line in lines:  # nothing left that a terminal would obey
        assert all(ch.isprintable() for ch in line), repr(line)
    assert {"red\\x1b[31m\\x1b[2J", "two\\nlines\\r", "abc\\u202edcba", "ロック-日本", "cafe\u0301"} <= {
        line.split("  ")[0].strip() for line in lines[1:]}
    # Every cell starts at the same display column as its header (no cell here has a space).
    def starts(line: str) -> list[int]:
        return [display_width(line[:cell.start()]) for cell in re.finditer(r"\S+", line)]

    assert all(starts(line) == starts(lines[0]) for line in lines[1:]), lines
    # --json keeps the names exactly as given
    assert sorted(lock["name"] for lock in moot_json(url, namespace, "locks")) == sorted(HARD_NAMES.values())
    for lock in held:
        lock.release()


def test_table_cells_are_escaped_and_padded_by_display_width() -> None:
    from moot.cli.output import display_width, printable, table

    assert printable("a\x1bb\nc\u202ed\\e") == "a\\x1bb\\nc\\u202ed\\\\e"
    assert printable("日本 café") == "日本 café"
    assert (display_width("日本"), display_width("cafe\u0301"), display_width("abc")) == (4, 4, 3)
    lines = table(["NAME", "X"], [["日本", "1"], ["cafe\u0301", "2"], ["a\tb", "3"], ["abcdefg", "4"]]).splitlines()
    assert lines == ["NAME     X", "日本     1", "cafe\u0301     2", "a\\tb     3", "abcdefg  4"]


@pytest.mark.parametrize("command", [["locks"], ["--json", "ping"], ["members", "crew"], ["elections"],
                                     ["watch", "locks", "--duration", "1"]])
def test_a_missing_file_directory_is_an_error_and_never_created(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no-such" / "coord"
    done = run_moot("--url", f"file://{missing}", "--timeout", "3", *command)
    assert_one_line_error(done, 1)
    assert str(missing) in done.stderr and "mistyped" in done.stderr, done.stderr
    assert not (tmp_path / "no-such").exists()
    if command[-1] == "ping":
        answer = json.loads(done.stdout)
        assert answer["reachable"] is False and "mistyped" in answer["error"], answer

    # moot's default directory ($XDG_RUNTIME_DIR/moot-$USER) is not made either
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    default = run_moot("--timeout", "3", *command, env=_env(XDG_RUNTIME_DIR=str(runtime)))
    assert_one_line_error(default, 1)
    assert "--url" in default.stderr and "$MOOT_URL" in default.stderr, default.stderr
    assert list(runtime.iterdir()) == []

    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert_one_line_error(run_moot("--url", f"file://{a_file}", "--timeout", "3", *command), 1)


def test_an_existing_file_directory_is_read(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'moot'}"
    with moot.connect(url, member_id="reader-1", namespace="cli-read") as coord:
        coord.group("crew").join()
        assert moot_json(url, "cli-read", "groups") == [{"name": "crew", "members": ["reader-1"]}]


def test_demo_hint_works_verbatim_and_check_says_what_it_checked() -> None:
    demo = Running(argv=[sys.executable, "-m", "moot", "demo", "--duration", "8"], cwd=ROOT)
    with demo:
        line = demo.line()
        while not line.startswith("watch it from another terminal:"):
            line = demo.line()
        hint = line.split(":", 1)[1].strip()
        assert hint.endswith(" watch locks"), hint
        words = shlex.split(hint)
        if (ROOT / ".venv" / "bin" / "moot").exists() and Path(sys.executable).parent == ROOT / ".venv" / "bin":
            assert words[0] == ".venv/bin/moot", hint  # what the README's `make demo` setup gives
        with Running(argv=words, cwd=ROOT) as watch:  # as printed, from where `make demo` runs
            # On a loaded machine the first view may come before a worker takes
            # a lock ("no lock ..."); the workers' locks show within the demo.
            frames = []
            while not frames or frames[-1][0].split() != ["LOCK", "MEMBER", "STATE", "TOKEN", "MODE", "FOR"]:
                assert len(frames) < 20, frames
                header = watch.line()
                assert re.fullmatch(r"-- \d\d:\d\d:\d\d locks\n", header), header
                frames.append(list(iter(watch.line, "\n")))
            watch.proc.send_signal(signal.SIGTERM)
            assert watch.finish() == 0
        rest = []
        while (more := demo._out.get(timeout=120)) is not None:
            rest.append(more)
        assert demo.finish() == 0, "".join(rest)
    out = "".join(rest)
    kill = re.search(r"SIGKILL to the leader (worker-\d+) \(pid \d+\)(?:, holding (.*))?$", out, re.MULTILINE)
    check = re.search(r"check +.* new leader worker-\d+, (.*), (worker-\d+) gone from the group: OK$", out,
                      re.MULTILINE)
    assert kill is not None and check is not None, out
    assert check.group(2) == kill.group(1)
    if kill.group(2):  # it held locks: the check names them
        held = re.findall(r"(volume-\d) \(token \d+\)", kill.group(2))
        assert check.group(1).startswith(f"{kill.group(1)}'s lock"), out
        assert all(name in check.group(1) for name in held), out
    else:
        assert "held no lock when killed" in check.group(1), out


def test_demo_check_line_for_a_leader_that_held_no_lock() -> None:
    import io

    from moot.demo import Narrator, Snapshot
    from moot.recipes.lock import LockInfo
    from moot.recipes.queue import Waiter

    def narrate(locks_at_kill: dict[str, LockInfo | None]) -> str:
        out = io.StringIO()
        narrator = Narrator(out)
        before = Snapshot(frozenset({"worker-1", "worker-2"}), ("worker-1", "worker-2"), locks_at_kill)
        narrator.observe(before)
        narrator.record_kill("worker-1", before)
        narrator.observe(Snapshot(frozenset({"worker-2"}), ("worker-2",),
                                  dict.fromkeys(("volume-1", "volume-2"))))
        assert narrator.confirmed
        return next(line for line in out.getvalue().splitlines() if " check " in line)

    waiter = Waiter("worker-1", 0.0, 8, "exclusive")
    free = narrate({"volume-1": LockInfo("volume-1", "worker-2", 7, 0.0, (waiter,)), "volume-2": None})
    assert "worker-1 held no lock when killed" in free and "its wait for volume-1 dropped" in free, free
    assert "freed" not in free, free
    held = narrate({"volume-1": None, "volume-2": LockInfo("volume-2", "worker-1", 9, 0.0, ())})
    assert "worker-1's lock volume-2 freed" in held and "held no lock" not in held, held
