"""moot as a tooz driver (moot.integrations.tooz), on every backend.

Two parts: tooz's own driver suite (tooz/tests/test_coordination.py and
test_partitioner.py, run as tooz's CI runs them, with TOOZ_TEST_URL set to
``moot+<url>``) must pass whole but for the tests listed, with their
reasons, in tests/tooz_not_applicable.py; and what real tooz callers rely on,
checked directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tooz
import tooz.tests
from tooz import coordination

import moot
from moot.integrations import tooz as moot_tooz
from moot.url import parse_url
from tests.conftest import TEST_TTL
from tests.tooz_not_applicable import not_applicable

TOOZ_TESTS = Path(tooz.tests.__file__).resolve().parent
REPO = Path(__file__).resolve().parent.parent
SUITES = ("test_coordination.py", "test_partitioner.py")
#: A bound on one run of both suites (about 15 s on one backend, measured).
SUITE_TIMEOUT = 240


def tooz_url(url: str, **options: object) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return f"moot+{url}{'&' if '?' in url else '?'}{query}"


def _outcomes(report: Path) -> dict[str, str]:
    """test id (``Class::test``) -> passed / failed / error / skipped."""
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        outcomes[test_id] = outcome
    return outcomes


def test_tooz_driver_suite_passes(backend: str, url: str, tmp_path: Path) -> None:
    skipped = not_applicable(backend)
    report = tmp_path / "tooz.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
            f"--junitxml={report}", "--rootdir", str(tmp_path), "--timeout", "60", "-p", "tests.tooz_not_applicable",
            *(str(TOOZ_TESTS / suite) for suite in SUITES)]
    env = {**os.environ, "MOOT_TOOZ_KIND": backend, "PYTHONPATH": str(REPO),
           "TOOZ_TEST_URL": tooz_url(url, namespace=f"tooz-{uuid.uuid4().hex[:8]}")}
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=SUITE_TIMEOUT)
    elapsed = time.monotonic() - started
    outcomes = _outcomes(report)
    bad = {test: outcome for test, outcome in outcomes.items() if outcome != "passed"}
    failures = done.stdout[done.stdout.find("= FAILURES ="):]
    assert not bad and done.returncode == 0, f"{bad}\n{failures[:20000]}"
    assert len(outcomes) >= 80, f"only {len(outcomes)} tooz tests ran:\n{done.stdout[-2000:]}"
    assert not set(outcomes) & set(skipped)
    print(f"tooz suites on moot+{backend}: {len(outcomes)} passed, {len(skipped)} not applicable, {elapsed:.1f}s")


# -- what real callers rely on ------------------------------------------------
Make = Callable[..., coordination.CoordinationDriver]


@pytest.fixture
def make(url: str, namespace: str) -> Iterator[Make]:
    """``make(member_id)``: a started tooz coordinator on ``moot+<url>``,
    in this test's namespace, stopped after the test."""
    started: list[coordination.CoordinationDriver] = []

    def get(member_id: bytes | str = b"me", **options: object) -> coordination.CoordinationDriver:
        options.setdefault("namespace", namespace)
        options.setdefault("ttl", TEST_TTL)
        coord = coordination.get_coordinator(tooz_url(url, **options), member_id)
        coord.start()
        started.append(coord)
        return coord

    yield get
    for coord in started:
        if coord.is_started:
            coord.stop()


def test_str_and_bytes_ids_name_the_same_group_and_member(make: Make) -> None:
    coord = make("worker-1")
    coord.create_group("g").get()
    with pytest.raises(coordination.GroupAlreadyExist):
        coord.create_group(b"g").get()
    coord.join_group(b"g", {"weight": 2}).get()
    assert coord.get_groups().get() == [b"g"]
    assert coord.get_members("g").get() == {b"worker-1"}
    assert coord.get_member_capabilities("g", b"worker-1").get() == {"weight": 2}
    assert coord.get_member_capabilities(b"g", "worker-1").get() == {"weight": 2}
    coord.leave_group("g").get()
    assert coord.get_members(b"g").get() == set()


def test_asynchronous_calls_take_effect_in_submission_order(make: Make) -> None:
    coord = make()
    results = [coord.create_group(b"g"), coord.join_group(b"g", {"n": 1}), coord.update_capabilities(b"g", {"n": 2})]
    members = coord.get_members_with_capabilities(b"g")
    assert members.get(timeout=10) == {b"me": {"n": 2}}
    assert [result.get(timeout=10) for result in results] == [None, None, None]


def test_a_group_is_seen_by_every_other_member_at_once(make: Make) -> None:
    first, second = make(b"first"), make(b"second")
    first.create_group(b"g").get()
    assert b"g" in second.get_groups().get()
    second.join_group(b"g").get()  # no GroupNotCreated: the group is there for everyone
    assert first.get_members(b"g").get() == {b"second"}
    first.join_group(b"g").get()
    assert second.get_members(b"g").get() == {b"first", b"second"}


def test_run_watchers_reports_a_completed_join_and_leave_at_once(make: Make) -> None:
    first, second = make(b"first"), make(b"second")
    first.create_group(b"g").get()
    events: list[object] = []
    first.watch_join_group(b"g", events.append)
    first.watch_leave_group(b"g", events.append)
    second.join_group(b"g").get()
    assert len(first.run_watchers()) == 1
    second.stop()
    assert len(first.run_watchers()) == 1
    assert [type(e) for e in events] == [coordination.MemberJoinedGroup, coordination.MemberLeftGroup]
    assert all(e.member_id == b"second" and e.group_id == b"g" for e in events)  # type: ignore[attr-defined]


def test_release_of_a_lock_not_held_returns_false_and_never_raises(make: Make) -> None:
    coord = make()
    lock = coord.get_lock(b"x")
    assert lock.release() is False
    assert lock.acquire(blocking=False) is True
    assert lock.release() is True
    assert lock.release() is False
    assert lock.acquire() is True
    coord.stop()  # the session ends: the lock with it
    assert lock.release() is False


def test_tooz_locks_are_moot_locks_fenced_and_introspectable(make: Make) -> None:
    coord = make(b"conductor-1")
    lock = coord.get_lock(b"volume-42")
    assert isinstance(lock, moot_tooz.MootLock) and isinstance(coord, moot_tooz.MootDriver)
    with lock:
        first = lock.token
        info = coord.coordinator().lock_info("volume-42")
        assert info is not None and info.holder == "conductor-1" and info.token == first
        assert lock.heartbeat() is True and lock.is_still_owner() is True
    assert lock.heartbeat() is False
    with lock(5):  # tooz's positional blocking timeout
        assert first is not None and lock.token is not None and lock.token > first
    other = make(b"conductor-2").get_lock("volume-42")  # str names the same lock
    with lock:
        assert other.acquire(blocking=0.2) is False
        assert other.acquire(blocking=False) is False


def test_heartbeat_is_cheap_and_not_required(make: Make) -> None:
    coord = make()
    assert coord.requires_beating is False
    interval = coord.heartbeat()
    assert isinstance(interval, float) and 0 < interval <= TEST_TTL


def test_an_unknown_url_option_is_a_clear_error(url: str) -> None:
    coord = coordination.get_coordinator(tooz_url(url, bogus="1"), b"me")
    with pytest.raises(tooz.ToozError, match=r"unknown option.*bogus.*known: .*ttl"):
        coord.start()
    assert not coord.is_started


@pytest.mark.network
def test_a_refused_connection_is_a_tooz_connection_error(url: str) -> None:
    port = parse_url(url).hosts[0][1]
    refused = url.replace(f":{port}", ":1", 1)
    coord = coordination.get_coordinator(tooz_url(refused, timeout=2), b"me")
    started = time.monotonic()
    with pytest.raises(coordination.ToozConnectionError):
        coord.start()
    assert time.monotonic() - started < 2.0 + 1.0


def test_characteristics_are_those_of_the_engine(make: Make, backend: str) -> None:
    traits = set(make().CHARACTERISTICS)
    assert coordination.Characteristics.DISTRIBUTED_ACROSS_THREADS in traits
    assert (coordination.Characteristics.DISTRIBUTED_ACROSS_PROCESSES in traits) == (backend != "memory")
    assert (coordination.Characteristics.DISTRIBUTED_ACROSS_HOSTS in traits) == (backend not in ("memory", "file"))
    assert (coordination.Characteristics.NON_TIMEOUT_BASED in traits) == (backend == "file")


def test_campaign_without_blocking_answers_at_once(connect: Callable[..., moot.Coordinator]) -> None:
    """What run_watchers() stands for leadership with (moot's public API)."""
    first, second = connect("first"), connect("second")
    assert first.election("e").campaign(blocking=False)
    started = time.monotonic()
    assert second.election("e").campaign(blocking=False) is False
    assert time.monotonic() - started < 2.0
    assert second.election("e").candidates() == ["first"]  # the candidacy was withdrawn


def test_callers_checks_pass_in_a_monkey_patched_process(server_urls: dict[str, str]) -> None:
    """OpenStack services call tooz under eventlet.monkey_patch(): the checks
    above, on every backend of this run, in such a process."""
    env = {**os.environ, "MOOT_TEST_URLS": ",".join(server_urls.values())}
    run = subprocess.run(
        [sys.executable, "-m", "tests.eventlet_pytest", "-q", "-p", "no:cacheprovider", "--timeout", "60",
         "tests/test_tooz_driver.py", "-k", "not suite and not monkey"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
