"""The workloads, written once for both systems (see :mod:`bench.systems`).

Each takes ``(system, kind, url, params, note)`` and returns a JSON-able
dict. Every loop is bounded in count and in time; every child process is
joined within a bound, then killed. Times between processes are taken with
``time.monotonic()`` (CLOCK_MONOTONIC: one clock for the whole machine).

* ``uncontended``: one client acquires and releases one lock in a loop.
* ``contended``: N processes loop on one lock, each holding it ``hold``
  seconds (busy, so the hold is exact): each process's share of the
  acquisitions, the handoff latency (one process's release to another's
  acquire returning) and the longest single wait, counting the waits of
  processes that never got the lock.
* ``heartbeat``: one client holds ``locks`` locks; the wall time of one
  heartbeat and the requests the server handled for it.
* ``kill``: a process holds a lock and is a group member; it is SIGKILLed
  while another process waits for the lock: time until the lock is acquired
  and until the member is no longer listed. The run's kill steps run at
  once (:func:`kill_all`).
* ``members``: ``members()`` of a group of ``members`` members, each its own
  coordinator (spread over a few processes, as in a real deployment).
* ``close``: ``close()`` of a client holding a lock and a group membership.
* ``work``: the requests the engine itself counts (see
  :data:`bench.engines.COUNTED`) for one uncontended acquire+release, and for
  one handoff: from the holder's release to the queued waiter's acquire
  returning (the waiter's polls in that window included).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import signal
import statistics
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from bench.engines import COUNTED, RequestCounter
from bench.report import DEFAULT_TTL
from bench.scaling import scaling
from bench.systems import Client, LockHandle, open_client

Note = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Params:
    """Sizes and bounds of one run (``quick()`` for a smoke run)."""

    uncontended_ops: int = 20000
    uncontended_seconds: float = 3.0
    raw_ops: int = 20000
    raw_seconds: float = 1.5
    processes: int = 4
    hold: float = 0.001
    contended_seconds: float = 5.0
    heartbeat_locks: int = 500
    kill_bound: float = 40.0
    members: int = 1000
    member_processes: int = 4
    members_calls: int = 200
    members_seconds: float = 5.0
    close_reps: int = 5
    work_ops: int = 200
    work_handoffs: int = 20
    #: Handoffs stop once this long has passed and ``work_handoffs_least`` were counted: a
    #: polled handoff (tooz on etcd, PostgreSQL, memcached) takes ~1 s, and its count is the same each time.
    work_handoffs_seconds: float = 5.0
    work_handoffs_least: int = 5

    @classmethod
    def quick(cls) -> Params:
        return cls(uncontended_ops=5000, uncontended_seconds=1.0, raw_ops=5000, raw_seconds=0.5,
                   contended_seconds=2.0, heartbeat_locks=100, members=200, member_processes=2,
                   members_calls=50, members_seconds=2.0, close_reps=3,
                   work_ops=50, work_handoffs=8)


def namespace() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _spawn() -> Any:
    return multiprocessing.get_context("spawn")


def _receive(channel: Any, procs: list[Any], timeout: float) -> Any:
    """The next message from child processes, within ``timeout`` seconds;
    RuntimeError at once if one of them died without a word (e.g. an import
    failed in it)."""
    import queue

    deadline = time.monotonic() + timeout
    while True:
        try:
            return channel.get(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a child process exited with code {dead[0]} (see its traceback above)") from None
            if time.monotonic() >= deadline:
                raise


def _reap(procs: list[Any], timeout: float) -> None:
    """Join child processes within ``timeout``; kill the ones still running."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# -- uncontended ------------------------------------------------------------------
def uncontended(system: str, kind: str, url: str, params: Params, note: Note) -> dict[str, Any]:
    client = open_client(system, url, "solo", namespace())
    try:
        lock = client.lock("uncontended")
        for _ in range(20):  # warm up: connections, scripts, directories
            _cycle(lock)
        samples: list[float] = []
        started = time.perf_counter()
        deadline = started + params.uncontended_seconds
        while len(samples) < params.uncontended_ops and time.perf_counter() < deadline:
            t0 = time.perf_counter()
            _cycle(lock)
            samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    ends = list(itertools.accumulate(samples))
    return {"ops": len(samples), "seconds": elapsed, "per_second": len(samples) / elapsed,
            "per_second_windows": window_rates(ends, 0.0, ends[-1] if ends else 0.0),
            "p50_us": statistics.median(samples) * 1e6, "p99_us": quantile(samples, 0.99) * 1e6}


#: Equal windows a timed run is cut into, to state its spread.
WINDOWS = 3


def window_rates(times: list[float], start: float, end: float) -> list[float]:
    """Events per second in each of :data:`WINDOWS` equal windows of
    [start, end) (``times`` are the events' times): the spread of a rate
    over one run, which the report states next to it."""
    width = (end - start) / WINDOWS
    if width <= 0:
        return []
    counts = [0] * WINDOWS
    for t in times:
        if start <= t < end:
            counts[min(WINDOWS - 1, int((t - start) / width))] += 1
    return [c / width for c in counts]


def _cycle(lock: LockHandle) -> None:
    if not lock.acquire(5.0):
        raise RuntimeError("an uncontended lock was not acquired within 5 s")
    lock.release()


# -- contended --------------------------------------------------------------------
def _contender(system: str, url: str, ns: str, index: int, hold: float, seconds: float,
               ready: Any, go: Any, start_at: Any, out: Any) -> None:
    records: list[tuple[float, int, float, float]] = []  # got, index, asked, released
    gave_up: list[tuple[float, float]] = []  # asked, gave up
    try:
        client = open_client(system, url, f"p{index}", ns)
        try:
            lock = client.lock("contended")
            ready.put(index)
            if not go.wait(120):
                out.put((index, records, gave_up, "never started"))
                return
            start = start_at.value
            end = start + seconds
            while time.monotonic() < start:
                time.sleep(0.0002)
            while (asked := time.monotonic()) < end:
                try:
                    acquired = lock.acquire(end - asked)
                except Exception:  # kazoo's LockTimeout, tenacity's RetryError: tooz's ways to time out
                    acquired = False
                if not acquired:
                    gave_up.append((asked, time.monotonic()))
                    break
                got = time.monotonic()
                while time.monotonic() < got + hold:
                    pass
                released = time.monotonic()
                lock.release()
                records.append((got, index, asked, released))
        finally:
            client.close()
    except Exception:
        out.put((index, records, gave_up, traceback.format_exc(limit=5)))
        return
    out.put((index, records, gave_up, None))


def contended(system: str, kind: str, url: str, params: Params, note: Note) -> dict[str, Any]:
    ctx = _spawn()
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    ns = namespace()
    n = params.processes
    procs = [ctx.Process(target=_contender, args=(system, url, ns, i, params.hold, params.contended_seconds,
                                                  ready, go, start_at, out), daemon=True)
             for i in range(n)]
    for proc in procs:
        proc.start()
    results = []
    try:
        for _ in range(n):
            _receive(ready, procs, 90)
        start_at.value = time.monotonic() + 0.2
        go.set()
        note(f"{n} processes on one lock for {params.contended_seconds:g} s")
        for _ in range(n):
            results.append(_receive(out, procs, params.contended_seconds + 60))
    finally:
        go.set()
        _reap(procs, 30)
    errors = [r[3] for r in results if r[3]]
    records = sorted(rec for r in results for rec in r[1])
    gave_up = [g for r in results for g in r[2]]
    counts = [sum(1 for rec in records if rec[1] == i) for i in range(n)]
    total = max(1, len(records))
    handoffs = [(b[0] - a[3]) * 1000 for a, b in itertools.pairwise(records) if a[1] != b[1]]
    waits = [(rec[0] - rec[2]) * 1000 for rec in records] + [(end - asked) * 1000 for asked, end in gave_up]
    return {
        "processes": n, "hold_ms": params.hold * 1000, "seconds": params.contended_seconds,
        "acquisitions": len(records), "per_second": len(records) / params.contended_seconds,
        "per_second_windows": window_rates([rec[0] for rec in records], start_at.value,
                                           start_at.value + params.contended_seconds),
        "share": [c / total for c in counts],
        "handoff_p50_ms": quantile(handoffs, 0.50), "handoff_p99_ms": quantile(handoffs, 0.99),
        "handoff_max_ms": max(handoffs, default=0.0), "handoffs": [round(h, 4) for h in handoffs],
        "longest_wait_ms": max(waits, default=0.0), "waits": [round(w, 3) for w in waits], "errors": errors,
    }


# -- heartbeat --------------------------------------------------------------------
def heartbeat(system: str, kind: str, url: str, params: Params, note: Note) -> dict[str, Any]:
    client = open_client(system, url, "beater", namespace(), heart=False)
    held: list[LockHandle] = []
    try:
        deadline = time.monotonic() + 90
        for i in range(params.heartbeat_locks):
            if time.monotonic() > deadline:
                break
            lock = client.lock(f"hb-{i}")
            if lock.acquire(5.0):
                held.append(lock)
        note(f"{len(held)} locks held")
        counter = RequestCounter(kind, url)
        times: list[float] = []
        counts: list[int] = []
        for _ in range(5):
            if counter.available:
                counter.start()
            t0 = time.perf_counter()
            client.heartbeat()
            times.append(time.perf_counter() - t0)
            if counter.available:
                counts.append(counter.stop() or 0)
        idle: list[int] = []
        for _ in range(3 if counter.available else 0):  # the same window with no heartbeat
            counter.start()
            idle.append(counter.stop() or 0)
        for lock in held:
            lock.release()
    finally:
        client.close()
    return {"locks": len(held), "heartbeat_ms": statistics.median(times) * 1000,
            "requests": max(0, min(counts) - min(idle)) if counts and idle else None,
            "idle_requests": min(idle) if idle else None}


# -- kill ---------------------------------------------------------------------------
#: The TTL of both systems in the kill workload: moot's default session TTL,
#: and tooz's lock and membership timeouts set to the same (the same workload:
#: tooz's defaults are 30 s on redis, etcd and memcached).
KILL_TTL = int(DEFAULT_TTL)
def _victim(system: str, url: str, ns: str, ready: Any) -> None:
    try:
        client = open_client(system, url, "victim", ns, ttl=KILL_TTL)
        lock = client.lock("victim")  # referenced until killed: tooz releases a collected lock
        if not lock.acquire(10):
            ready.put("the victim did not get its lock")
            return
        client.join("victims")
    except Exception:
        ready.put(traceback.format_exc(limit=6))
        return
    ready.put("ok")
    time.sleep(300)  # killed long before


def kill(system: str, kind: str, url: str, params: Params, note: Note, settle: float = 0.5) -> dict[str, Any]:
    """``settle``: seconds between the observer's queueing behind the victim
    and the kill (long enough, in :func:`kill_all`, for every other victim to
    have started: a kill on a busy machine would measure the machine)."""
    ctx = _spawn()
    ready = ctx.Queue()
    ns = namespace()
    proc = ctx.Process(target=_victim, args=(system, url, ns, ready), daemon=True)
    proc.start()
    observer: Client | None = None
    try:
        status = _receive(ready, [proc], 90)
        if status != "ok":
            raise RuntimeError(status)
        observer = open_client(system, url, "observer", ns, ttl=KILL_TTL)
        if "victim" not in observer.members("victims"):
            raise RuntimeError("the victim is not listed in its group")
        lock = observer.lock("victim")
        freed: list[float] = []
        kill_time = [0.0]

        def take() -> None:
            if lock.acquire(params.kill_bound + 1):
                freed.append(time.monotonic() - kill_time[0])
                lock.release()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        time.sleep(settle)  # the observer is queued behind the victim (not measured)
        kill_time[0] = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        note("victim SIGKILLed; waiting for its lock and membership to go")
        gone: float | None = None
        deadline = kill_time[0] + params.kill_bound
        while time.monotonic() < deadline:
            try:
                if "victim" not in observer.members("victims"):
                    gone = time.monotonic() - kill_time[0]
                    break
            except Exception:  # e.g. the group vanished with its last member
                gone = time.monotonic() - kill_time[0]
                break
            time.sleep(0.005)
        waiter.join(max(0.0, kill_time[0] + params.kill_bound + 2 - time.monotonic()))
    finally:
        if observer is not None:
            observer.close()
        _reap([proc], 0)
    return {"lock_free_s": freed[0] if freed else None, "member_gone_s": gone, "bound_s": params.kill_bound}


#: Seconds every victim of :func:`kill_all` is given to start before it is killed.
KILL_SETTLE = 4.0


def _silent(_text: str) -> None:
    pass


def kill_all(victims: list[tuple[str, str, str]], params: Params, note: Note) -> dict[tuple[str, str], dict[str, Any]]:
    """Every kill step of the run at once, each in a process of its own:
    (system, kind, url) -> its result by (kind, system). Each waits out a TTL
    with the machine nearly idle, and has its own victim, observer and
    namespace, so together they measure what they measure one by one, in one
    TTL instead of one per step. Processes, not threads: a thread that ran
    tooz's client never ends (something of eventlet's, which tooz imports,
    blocks its exit)."""
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with concurrent.futures.ProcessPoolExecutor(len(victims), mp_context=_spawn()) as pool:
        running = {pool.submit(kill, system, kind, url, params, _silent, KILL_SETTLE): (kind, system)
                   for system, kind, url in victims}
        note(f"{len(running)} victims at once; each SIGKILLed once it holds its lock")
        for future in concurrent.futures.as_completed(running):
            try:
                results[running[future]] = future.result()
            except Exception:
                results[running[future]] = {"error": traceback.format_exc(limit=8)}
    return results


# -- members ------------------------------------------------------------------------
#: Threads per member host that connect and join its members (each its own coordinator).
JOIN_THREADS = 16


def _member_host(system: str, url: str, ns: str, ids: list[str], ready: Any, stop: Any) -> None:
    """Join ``ids`` (each its own client) to the group, report, wait for
    ``stop``, close every client (all at once: tooz's ``stop()`` waits about
    a second on some drivers) and report ``"closed"``. The caller ends the
    host after that: some of tooz's threads keep a process from exiting."""
    errors: list[str] = []

    def join(member_id: str) -> Client | None:
        try:
            client = open_client(system, url, member_id, ns)
        except Exception as exc:
            errors.append(f"connect: {type(exc).__name__}: {exc}")
            return None
        try:
            client.join("big")
        except Exception as exc:
            errors.append(f"join: {type(exc).__name__}: {exc}")
            client.close()
            return None
        return client

    # Never joined: a thread that started a tooz client cannot be joined
    # (the pool's shutdown(wait=True) hangs), so neither pool is.
    pool = concurrent.futures.ThreadPoolExecutor(JOIN_THREADS)
    clients = [c for c in pool.map(join, ids) if c is not None]
    ready.put((len(clients), sorted(set(errors))[:3]))
    stop.wait(300)
    closers = concurrent.futures.ThreadPoolExecutor(max(1, len(clients)))
    concurrent.futures.wait([closers.submit(c.close) for c in clients], timeout=30)
    ready.put("closed")
    pool.shutdown(wait=False)
    closers.shutdown(wait=False)


def members(system: str, kind: str, url: str, params: Params, note: Note) -> dict[str, Any]:
    ns = namespace()
    probe = open_client(system, url, "probe", ns)
    try:  # a driver without groups (tooz's SQL ones) says so here, not after 1,000 connections
        probe.join("probe")
    finally:
        probe.close()
    ids = [f"m{i:04d}" for i in range(params.members)]
    hosts = 1 if kind == "memory" else params.member_processes
    chunks = [ids[i::hosts] for i in range(hosts)]
    procs: list[Any] = []
    if kind == "memory":  # one process by definition: the hosts are threads
        import queue

        ready: Any = queue.Queue()
        stop: Any = threading.Event()
        threads = [threading.Thread(target=_member_host, args=(system, url, ns, c, ready, stop), daemon=True)
                   for c in chunks]
    else:
        ctx = _spawn()
        ready, stop = ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_member_host, args=(system, url, ns, c, ready, stop), daemon=True)
                 for c in chunks]
        threads = []
    for worker in [*procs, *threads]:
        worker.start()
    observer: Client | None = None
    try:
        reports = [_receive(ready, procs, 240) for _ in chunks]
        joined = sum(count for count, _ in reports)
        errors = sorted({error for _, found in reports for error in found})
        note(f"{joined} members joined ({len(chunks)} {'threads' if threads else 'processes'})")
        observer = open_client(system, url, "observer", ns)
        listed = 0
        settle = time.monotonic() + 30
        while time.monotonic() < settle:
            listed = len(observer.members("big"))
            if listed >= joined:
                break
            time.sleep(0.1)
        samples: list[float] = []
        started = time.monotonic()
        while len(samples) < params.members_calls and time.monotonic() - started < params.members_seconds:
            t0 = time.perf_counter()
            observer.members("big")
            samples.append(time.perf_counter() - t0)
        note(f"{len(samples)} members() calls")
    finally:
        if observer is not None:
            observer.close()
        stop.set()
        with contextlib.suppress(Exception):  # a host that died was reported above
            for _ in chunks:
                while _receive(ready, procs, 40) != "closed":
                    pass
        for thread in threads:
            thread.join(30)
        _reap(procs, 0)
    return {"members": joined, "listed": listed, "calls": len(samples), "errors": errors,
            "p50_ms": statistics.median(samples) * 1000 if samples else None,
            "p99_ms": quantile(samples, 0.99) * 1000 if samples else None}


# -- close ----------------------------------------------------------------------------
def close(system: str, kind: str, url: str, params: Params, note: Note) -> dict[str, Any]:
    ns = namespace()
    samples: list[float] = []
    for i in range(params.close_reps):
        client = open_client(system, url, f"closer-{i}", ns)
        try:
            client.lock(f"close-{i}").acquire(5.0)
            client.join("closers")
        except Exception:
            client.close()
            raise
        t0 = time.perf_counter()
        client.close()
        samples.append(time.perf_counter() - t0)
    return {"reps": len(samples), "p50_ms": statistics.median(samples) * 1000, "max_ms": max(samples) * 1000}


# -- work -----------------------------------------------------------------------------
def _counted(counter: RequestCounter, action: Callable[[], object]) -> int:
    counter.start()
    action()
    return counter.stop() or 0


def work(system: str, kind: str, url: str, params: Params, note: Note) -> dict[str, Any]:
    counter = RequestCounter(kind, url)
    if not counter.available:
        return {"counted": None}
    ns = namespace()
    first, second = open_client(system, url, "first", ns), open_client(system, url, "second", ns)
    try:
        locks = [first.lock("work"), second.lock("work")]
        for _ in range(10):  # warm up: connections, scripts, directories
            _cycle(locks[0])
            _cycle(locks[1])
        def loop() -> None:
            for _ in range(params.work_ops):
                _cycle(locks[0])

        t0 = time.monotonic()
        cycles = _counted(counter, loop)
        took = time.monotonic() - t0
        idle_cycles = _counted(counter, lambda: time.sleep(took))
        handoffs: list[int] = []
        idle: list[int] = []
        if not locks[0].acquire(5.0):
            raise RuntimeError("the first lock was not acquired within 5 s")
        started = time.monotonic()
        for i in range(params.work_handoffs):
            if i >= params.work_handoffs_least and time.monotonic() - started > params.work_handoffs_seconds:
                break
            holder, waiter = locks[i % 2], locks[1 - i % 2]
            served = threading.Event()

            def wait(lock: LockHandle = waiter, done: threading.Event = served) -> None:
                if lock.acquire(30.0):
                    done.set()

            thread = threading.Thread(target=wait, daemon=True)
            thread.start()
            time.sleep(0.05)  # the waiter queues and waits: not counted
            def hand_over(lock: LockHandle = holder, done: threading.Event = served) -> None:
                lock.release()
                done.wait(30.0)

            handoffs.append(_counted(counter, hand_over))
            thread.join(30)
            if not served.is_set():
                raise RuntimeError("a queued waiter was not served within 30 s of the release")
            idle.append(_counted(counter, lambda: None))
        locks[len(handoffs) % 2].release()
    finally:
        first.close()
        second.close()
    per_cycle = max(0, cycles - idle_cycles) / params.work_ops
    return {"counted": COUNTED[kind], "acquire_release": round(per_cycle, 2),
            "handoff": max(0, statistics.median(handoffs) - statistics.median(idle)),
            "handoffs": handoffs, "idle": idle, "idle_during_cycles": idle_cycles}


WORKLOADS: dict[str, Callable[[str, str, str, Params, Note], dict[str, Any]]] = {
    "uncontended": uncontended,
    "contended": contended,
    "heartbeat": heartbeat,
    "kill": kill,
    "members": members,
    "close": close,
    "work": work,
    "scaling": scaling,
}

#: Workloads that measure moot alone (how its own cost grows).
MOOT_ONLY = {"scaling"}

#: Workloads that need several OS processes (not on memory://).
MULTIPROCESS = {"contended", "kill"}
