"""The fault suite (issue 9): worker processes loop on one lock and write to
a fenced register while faults are injected; the recorded history must show
no violation (see ``history.py`` for the checks, ``docs/reliability.md``
for the fault model).

Every scenario draws its fault schedule (which fault, when, how long) from
``random.Random(f"{SEED}:{scenario}")``; the seed is printed in the summary
and in every failure, and ``MOOT_FAULT_SEED=N`` replays it (the schedule,
not the OS's scheduling). On a failure the raw history (JSON) is kept and
its path printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import moot
from tests import servers
from tests.conftest import _selected
from tests.faults.conftest import RESULTS, SEED
from tests.faults.history import Fault, Membership, Report, analyse
from tests.faults.proxy import Proxy
from tests.faults.register import FencedRegister

REPO = Path(__file__).resolve().parents[2]
TTL = 1.5
WORKERS = 3
LOCK = "fenced"
GROUP = "workers"
#: Every live worker is listed in the group again within this long after an outage ends.
MEMBERSHIP_BOUND = 3 * TTL
#: Some worker acquires the lock within this long after a fault ends.
PROGRESS_BOUND = 5 * TTL
#: MOOT_FAULT_ROUNDS=N runs every scenario N times longer (a soak run).
ROUNDS = int(os.environ.get("MOOT_FAULT_ROUNDS") or 1)
#: Every check; a scenario whose fault breaks a check's precondition promises fewer.
ALL_CHECKS = frozenset({"overlap", "stale-accepted", "token-order", "stale-holder", "membership", "stall", "exit"})
#: An engine that loses its data (redis without persistence restarted, a Sentinel failover to a
#: replica that missed the last writes) forgets who holds the lock: only fencing is promised.
DATA_LOSS_CHECKS = ALL_CHECKS - {"overlap", "stale-holder"}

pytestmark = pytest.mark.multiprocess


def _pause(seconds: float) -> None:
    """A fault's deliberate duration (not a wait for a condition)."""
    threading.Event().wait(seconds)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return "?"


def _wait(predicate: Callable[[], object], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


class Worker:
    def __init__(self, index: int, process: subprocess.Popen[bytes], log: Path, proxy: Proxy | None):
        self.index = index
        self.process = process
        self.pid = process.pid
        self.log = log
        self.proxy = proxy
        self.stopped = False
        self.killed = False
        self._offset = 0
        self.events: list[dict[str, Any]] = []

    @property
    def member(self) -> str:
        return f"w-{self.pid}"

    def alive(self) -> bool:
        return not self.killed and self.process.poll() is None

    def read(self) -> list[dict[str, Any]]:
        """The events logged so far (read incrementally; whole lines only)."""
        with contextlib.suppress(FileNotFoundError), open(self.log, "rb") as f:
            f.seek(self._offset)
            data = f.read()
            end = data.rfind(b"\n") + 1
            self._offset += end
            self.events += [json.loads(line) for line in data[:end].splitlines() if line]
        return self.events

    def holding(self) -> bool:
        last = None
        for event in reversed(self.read()):
            if event["ev"] in ("acq", "rel", "seen_lost", "lost"):
                last = event["ev"]
                break
        return last == "acq"


class Run:
    """One scenario: its register, workers, observer, faults and checks."""

    def __init__(self, name: str, url: str, engine_port: tuple[str, int] | None, file_backend: bool = False,
                 promised: frozenset[str] = ALL_CHECKS):
        self.name = name
        self.promised = promised
        self.url = url
        self.engine_port = engine_port
        self.file_backend = file_backend
        self.rng = random.Random(f"{SEED}:{name}")
        self.dir = Path(tempfile.mkdtemp(prefix="moot-faults-"))
        self.namespace = f"f-{uuid.uuid4().hex[:10]}"
        self.register = FencedRegister(str(self.dir / "register.sock"))
        self.workers: list[Worker] = []
        self.faults: list[Fault] = []
        self.memberships: list[Membership] = []
        self.stalls: list[str] = []
        self.started = time.monotonic()
        self.observer = moot.connect(url, member_id="observer", namespace=self.namespace, ttl=2 * TTL, timeout=2)
        for _ in range(WORKERS):
            self.spawn()

    # -- workers -------------------------------------------------------------
    def spawn(self) -> Worker:
        index = len(self.workers)
        proxy = None
        url = self.url
        if self.engine_port is not None:
            host, port = self.engine_port
            proxy = Proxy(port, host)
            url = url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        log = self.dir / f"worker-{index}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.worker", url, self.namespace, LOCK, GROUP,
             str(self.dir / "register.sock"), str(log), str(TTL), str(SEED)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.dir / f"worker-{index}.err", "wb"))  # noqa: SIM115
        worker = Worker(index, process, log, proxy)
        self.workers.append(worker)
        return worker

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.alive()]

    def events(self) -> list[dict[str, Any]]:
        return [e for w in self.workers for e in w.read()]

    def acquisitions_since(self, since: float, exclude: int | None = None) -> int:
        return sum(1 for e in self.events() if e["ev"] == "acq" and e["t"] > since and e["pid"] != exclude)

    def holder(self, timeout: float = 3 * TTL) -> Worker | None:
        """A worker that holds the lock now, by its own log."""
        found: list[Worker] = []

        def look() -> bool:
            found[:] = [w for w in self.live() if not w.stopped and w.holding()]
            return bool(found)

        _wait(look, timeout)
        return found[0] if found else None

    def clinging(self) -> Worker | None:
        """A worker in the middle of a hold that it keeps until told it lost
        it (SIGHUP, see worker.py): the holder now if there is one, else the
        next one to acquire among those asked."""
        victim = self.holder(timeout=TTL)
        asked = [victim] if victim is not None else [w for w in self.live() if not w.stopped]
        sent = time.monotonic()
        for worker in asked:
            os.kill(worker.pid, signal.SIGHUP)
        found: list[Worker] = []

        def clings() -> bool:
            found[:] = [w for w in asked if any(e["ev"] == "cling" and e["t"] > sent for e in w.read())]
            return bool(found)

        _wait(clings, 4 * TTL)
        for worker in asked:
            if worker not in found[:1]:
                os.kill(worker.pid, signal.SIGUSR2)  # stop clinging
        return found[0] if found else None

    # -- faults --------------------------------------------------------------
    def sigkill(self) -> None:
        victim = self.clinging()
        if victim is None:
            return self._no_holder("sigkill")
        os.kill(victim.pid, signal.SIGKILL)
        fault = Fault("sigkill", time.monotonic(), pid=victim.pid)
        victim.killed = True
        victim.process.wait()
        fault.end = time.monotonic()
        self.faults.append(fault)
        self.spawn()
        self._progress(fault)

    def next_in_line(self) -> Worker | None:
        """The worker queued right behind the holder, by the observer's look at the lock."""
        found: list[Worker] = []

        def look() -> bool:
            info = self.observer.lock_info(LOCK)
            first = info.waiters[0].member if info is not None and info.waiters else None
            found[:] = [w for w in self.live() if not w.stopped and w.member == first]
            return bool(found)

        _wait(look, 3 * TTL)
        return found[0] if found else None

    def sigstop(self) -> None:
        victim = self.clinging()
        if victim is None:
            return self._no_holder("sigstop")
        self._stop_past_ttl(victim, "sigstop")

    def sigstop_waiter(self) -> None:
        """SIGSTOP of the waiter next in line, past its TTL: the release it
        waits for comes while it sleeps (on ZooKeeper the event waits in its
        socket, telling it that the one entry ahead went), its session ends,
        another worker acquires. Resumed, it must not take the lock on what
        it was told before its session ended."""
        victim = self.next_in_line()
        if victim is None:
            self.stalls.append(f"stall: no worker waited behind the holder for {3 * TTL:.1f}s")
            return
        self._stop_past_ttl(victim, "sigstop_waiter")

    def _stop_past_ttl(self, victim: Worker, kind: str) -> None:
        os.kill(victim.pid, signal.SIGSTOP)
        fault = Fault(kind, time.monotonic(), pid=victim.pid)
        victim.stopped = True
        self.faults.append(fault)
        _wait(lambda: _state(victim.pid) == "T", 5)
        if self.file_backend:  # the kernel keeps a stopped process's flocks: nobody else can acquire
            _pause(self.rng.uniform(1.2, 2.0) * TTL)
        else:  # past the TTL: until another worker acquired, then a little more
            if not _wait(lambda: self.acquisitions_since(fault.start, exclude=victim.pid) > 0, 4 * TTL):
                fault.note = "nobody acquired while it was stopped"
            _pause(self.rng.uniform(0, TTL / 2))
        fault.end = time.monotonic()
        os.kill(victim.pid, signal.SIGCONT)
        victim.stopped = False
        self._progress(fault)

    def busy(self) -> None:
        victim = self.clinging()
        if victim is None:
            return self._no_holder("busy")
        os.kill(victim.pid, signal.SIGUSR1)
        fault = Fault("busy", time.monotonic(), pid=victim.pid)
        self.faults.append(fault)
        _pause(self.rng.uniform(1.0, 2.0) * TTL)
        os.kill(victim.pid, signal.SIGUSR2)
        fault.end = time.monotonic()
        self._progress(fault)

    def partition(self, busy: bool = False) -> None:
        kind = "partition_busy" if busy else "partition"
        victim = self.clinging()
        if victim is None or victim.proxy is None:
            return self._no_holder(kind)
        if busy:
            os.kill(victim.pid, signal.SIGUSR1)
        victim.proxy.partition()
        fault = Fault(kind, time.monotonic(), pid=victim.pid)
        self.faults.append(fault)
        if not _wait(lambda: self.acquisitions_since(fault.start, exclude=victim.pid) > 0, 4 * TTL):
            fault.note = "nobody acquired while it was cut off"
        _pause(self.rng.uniform(0, TTL / 2))
        fault.end = time.monotonic()
        victim.proxy.heal()
        if busy:
            os.kill(victim.pid, signal.SIGUSR2)
        self._membership(fault)
        self._progress(fault)

    def engine_restart(self, cluster: servers.Cluster, kind: str = "engine_restart") -> None:
        member = cluster.members[0]
        holder = self.clinging()  # the engine dies under a holder in the middle of its work
        cluster.kill(member)
        fault = Fault(kind, time.monotonic(), note=f"holder {holder.pid if holder else None}")
        self.faults.append(fault)
        _pause(self.rng.uniform(0.2, 2 * TTL))
        cluster.restart(member)
        fault.end = time.monotonic()
        self._membership(fault)
        self._progress(fault)

    def leader_kill(self, cluster: servers.Cluster, kind: str = "leader_kill") -> None:
        leader = cluster.leader(timeout=30)
        holder = self.clinging()
        cluster.kill(leader)
        fault = Fault(kind, time.monotonic(),
                      note=f"member {leader.index}, holder {holder.pid if holder else None}")
        self.faults.append(fault)
        cluster.leader(timeout=30)
        fault.end = time.monotonic()
        self._membership(fault)
        self._progress(fault)
        cluster.restart(leader)

    def _no_holder(self, kind: str) -> None:
        self.stalls.append(f"stall: no worker held the lock for {3 * TTL:.1f}s before a {kind}")

    # -- recovery ------------------------------------------------------------
    def _progress(self, fault: Fault) -> None:
        assert fault.end is not None
        if not _wait(lambda: self.acquisitions_since(fault.end or 0) >= 2, PROGRESS_BOUND):
            self.stalls.append(f"stall: fewer than 2 acquisitions within {PROGRESS_BOUND:.1f}s after the "
                               f"{fault.kind} at {fault.start:.3f} ended at {fault.end:.3f}")

    def _membership(self, fault: Fault) -> None:
        assert fault.end is not None
        healed = fault.end
        expected = {w.member for w in self.live() if any(e["ev"] == "joined" for e in w.read())}
        missing: list[str] = []

        def listed() -> bool:
            try:
                members = set(self.observer.group(GROUP).members())
            except moot.MootError:
                missing[:] = sorted(expected)
                return False
            missing[:] = sorted(expected - members)
            return not missing

        ok = _wait(listed, MEMBERSHIP_BOUND + 2 * TTL, step=0.05)
        took = time.monotonic() - healed if ok else None
        self.memberships.append(Membership(fault.kind, healed, MEMBERSHIP_BOUND, took, missing))

    # -- end -----------------------------------------------------------------
    def finish(self, test_id: str) -> Report:
        for worker in self.workers:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGCONT)
                    os.kill(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(15)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
                self.stalls.append(f"exit: worker {worker.pid} did not exit within 15 s of SIGTERM")
            if worker.proxy is not None:
                worker.proxy.close()
        run_end = time.monotonic()
        with contextlib.suppress(moot.MootError):
            self.observer.close()
        self.register.close()
        events = self.events()
        attempts = self.register.snapshot()
        report = analyse(events, attempts, self.faults, self.memberships, run_end)
        report.violations += self.stalls
        report.classify(set(self.promised))
        history = self.dir / "history.json"
        history.write_text(json.dumps({
            "seed": SEED, "scenario": self.name, "url": self.url, "ttl": TTL,
            "faults": [f.__dict__ for f in self.faults],
            "memberships": [m.__dict__ for m in self.memberships],
            "attempts": [a.__dict__ for a in attempts], "events": events,
            "violations": report.violations, "not_promised": report.excused,
        }, default=str))
        RESULTS.append((test_id, report.line(), run_end - self.started))
        if report.violations:
            shown = "\n  ".join(report.violations[:25])
            more = len(report.violations) - 25
            pytest.fail(
                f"{len(report.violations)} violations in {self.name} (replay: MOOT_FAULT_SEED={SEED}); "
                f"{report.line()}\n  {shown}" + (f"\n  ... and {more} more" if more > 0 else "")
                + f"\nerrors seen by workers: {report.errors}\nhistory: {history} (worker logs in {self.dir})",
                pytrace=False)
        if not os.environ.get("MOOT_FAULT_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return report

    def abort(self) -> None:
        """Leave nothing running after an error in the test itself."""
        for worker in self.workers:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                worker.process.wait()
            if worker.proxy is not None:
                worker.proxy.close()
        with contextlib.suppress(Exception):
            self.observer.close()
        self.register.close()


@contextlib.contextmanager
def scenario(request: pytest.FixtureRequest, url: str, engine_port: tuple[str, int] | None = None,
             file_backend: bool = False, promised: frozenset[str] = ALL_CHECKS) -> Iterator[Run]:
    name = request.node.name
    run = Run(name, url, engine_port, file_backend, promised)
    finished = False
    try:
        # the workers are connected and contending before the first fault
        if not _wait(lambda: run.acquisitions_since(0) >= 2, 30):
            pytest.fail(f"the workers did not start acquiring within 30 s; logs in {run.dir}")
        yield run
        finished = True
    finally:
        if not finished:
            run.abort()
    run.finish(name)


def _engine_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a one-server URL (after any user@), None for file:// or several servers."""
    match = re.fullmatch(r"[a-z0-9+]+://(?:[^/@]*@)?([^/,:@]+):(\d+)(/.*)?", url)
    return (match.group(1), int(match.group(2))) if match else None


def _schedule(rng: random.Random, kinds: list[str], each: int) -> list[str]:
    plan = kinds * each * ROUNDS
    rng.shuffle(plan)
    return plan


# --------------------------------------------------------------------------
# Scenarios


def test_holder_faults(request: pytest.FixtureRequest, backend: str, url: str) -> None:
    """SIGKILL of the holder, SIGSTOP of the holder past its TTL, a busy CPU thread in the holder,
    SIGSTOP of the waiter next in line past its TTL."""
    with scenario(request, url, file_backend=backend == "file") as run:
        for kind in _schedule(run.rng, ["sigkill", "sigstop", "busy", "sigstop_waiter"], 2):
            _pause(run.rng.uniform(0.05, 0.5))
            getattr(run, kind)()


@pytest.mark.network
def test_partition(request: pytest.FixtureRequest, backend: str, url: str) -> None:
    """The holder cut off from the engine by a proxy that stops forwarding, idle or with a busy thread."""
    address = _engine_address(url)
    assert address is not None, f"{url} names no single server to put a proxy in front of"
    with scenario(request, url, engine_port=address) as run:
        for kind in _schedule(run.rng, ["partition", "partition_busy"], 2):
            _pause(run.rng.uniform(0.05, 0.5))
            run.partition(busy=kind == "partition_busy")


def _selected_kinds() -> set[str]:
    return {kind for kind, _ in _selected()}


@pytest.fixture
def own_server(request: pytest.FixtureRequest) -> Iterator[servers.Cluster]:
    kind, size = request.param
    base = "redis" if kind.startswith("redis") else kind
    if base not in _selected_kinds():
        pytest.skip(f"{base} is not among this run's backends")
    cluster = servers.start_cluster(kind, size=size)
    try:
        yield cluster
    finally:
        for member in cluster.members:  # a member left stopped would not die on SIGTERM
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if member.alive():
                    os.kill(member.pid, signal.SIGCONT)
        cluster.stop()


RESTARTED = ["redis", "redis_aof", "zookeeper", "etcd", "postgresql", "mysql", "memcached"]
#: Engines that lose everything when their server restarts (Redis without persistence, memcached).
FORGETFUL = {"redis", "memcached"}


@pytest.mark.parametrize("own_server", [(kind, 1) for kind in RESTARTED], ids=RESTARTED, indirect=True)
def test_engine_restart(request: pytest.FixtureRequest, own_server: servers.Cluster) -> None:
    """The engine killed with SIGKILL (with every process it forked) and restarted on its data."""
    keeps_data = own_server.kind.name not in FORGETFUL
    with scenario(request, own_server.url, promised=ALL_CHECKS if keeps_data else DATA_LOSS_CHECKS) as run:
        for _ in range(3 * ROUNDS):
            _pause(run.rng.uniform(0.05, 0.5))
            run.engine_restart(own_server)


@pytest.mark.parametrize("own_server", [("etcd", 3), ("zookeeper", 3)], ids=["etcd", "zookeeper"], indirect=True)
def test_cluster_leader_kill(request: pytest.FixtureRequest, own_server: servers.Cluster) -> None:
    """The leader of a 3-member cluster killed (and restarted once a new leader serves)."""
    with scenario(request, own_server.url) as run:
        for _ in range(2 * ROUNDS):
            _pause(run.rng.uniform(0.05, 0.5))
            run.leader_kill(own_server)


@pytest.mark.parametrize("own_server", [("redis_sentinel", 3)], ids=["redis"], indirect=True)
def test_sentinel_failover(request: pytest.FixtureRequest, own_server: servers.Cluster) -> None:
    """The Redis primary killed; the Sentinel promotes its replica (asynchronous replication)."""
    sentinel = servers.KINDS["redis_sentinel"]
    assert isinstance(sentinel, servers.RedisSentinel)

    def replica_synced() -> bool:
        return any(sentinel.synced_replica(m) for m in own_server.members[:2])

    with scenario(request, own_server.url, promised=DATA_LOSS_CHECKS) as run:
        for round_ in range(ROUNDS):
            if round_:  # the old primary, restarted, must be a synced replica before the next failover
                assert _wait(replica_synced, 60, step=0.2)
            _pause(run.rng.uniform(0.05, 0.5))
            run.leader_kill(own_server, kind="sentinel_failover")
