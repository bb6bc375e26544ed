"""``moot demo``: worker processes sharing locks, a group and an election,
narrated live; then the leader is killed and the others carry on.

Run it with ``moot demo`` or ``python -m moot.demo`` (``--url``,
``--workers``, ``--duration``). Without ``--url`` it works in a fresh
temporary file:// directory, removed at the end. It prints the URL first, and
a ``moot ... watch locks`` command that works as printed from the directory
the demo was started in (``.venv/bin/moot ...`` after ``make demo``), so that
another terminal shows the same state live.

Each worker is a separate OS process (``python -m moot.demo worker ...``)
with its own coordinator (member id ``worker-N``, short session TTL). It joins
the group ``workers``, campaigns in the election ``leader`` and, in a loop,
takes one of the locks ``volume-1`` / ``volume-2`` for a short random time.

The parent joins nothing: it reads the state every ``POLL_INTERVAL`` seconds
(``members()``, ``candidates()``, ``lock_info()``, exactly what the CLI
shows) and prints a line only when something changed. After two thirds of
the run it sends SIGKILL to the leader (preferably while it holds a lock) and
shows the new leader, the dead worker's lock handed over and its membership
gone (its check line says which locks it held when killed, or that it held
none). At the end it stops every worker and checks that each lock's tokens
only ever increased.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

import moot
from moot.errors import GroupNotFound, InvalidArgument, MootError
from moot.recipes.lock import LockInfo
from moot.url import parse_url, redact

LOCKS = ("volume-1", "volume-2")
GROUP = "workers"
ELECTION = "leader"
#: Session TTL of the workers: short, so that a killed worker's locks are
#: freed quickly on server backends too (at once on file://).
WORKER_TTL = 2.0
#: Seconds between two looks at the state.
POLL_INTERVAL = 0.4
#: How long a worker holds a lock, and pauses between two locks (seconds).
HOLD = (0.6, 1.8)
PAUSE = (0.2, 0.8)
#: A worker gives up waiting for a lock after this long (and tries again).
LOCK_WAIT = 5.0
#: Seconds a worker gets to leave cleanly after SIGTERM before SIGKILL.
STOP_GRACE = 5.0
#: After the kill, wait up to this long past the end for its aftermath.
AFTERMATH_GRACE = WORKER_TTL * 3


# -- workers -------------------------------------------------------------------------
def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(0)


def _parent_on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signal.SIGTERM)


def _campaign(election: moot.Election) -> None:
    with contextlib.suppress(Exception):  # the coordinator closed while campaigning: stopping
        election.campaign()


def worker(url: str, namespace: str, index: int) -> int:
    """One demo worker: join, campaign, take turns on the locks until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    member = f"worker-{index}"
    parent = os.getppid()
    rng = random.Random()
    try:
        with moot.connect(url, member_id=member, ttl=WORKER_TTL, namespace=namespace) as coord:
            coord.group(GROUP).join(capabilities={"pid": os.getpid(), "locks": list(LOCKS)})
            election = coord.election(ELECTION)
            threading.Thread(target=_campaign, args=(election,), name="campaign", daemon=True).start()
            while os.getppid() == parent:  # an orphan (the demo was killed) stops by itself
                lock = coord.lock(rng.choice(LOCKS))
                if lock.acquire(timeout=LOCK_WAIT):
                    try:
                        time.sleep(rng.uniform(*HOLD))
                    finally:
                        lock.release()
                time.sleep(rng.uniform(*PAUSE))
    except SystemExit:
        pass
    except MootError as exc:
        print(f"moot demo {member}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


# -- the narrating parent ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the parent sees at one look."""

    members: frozenset[str]
    candidates: tuple[str, ...]
    locks: dict[str, LockInfo | None]

    @property
    def leader(self) -> str | None:
        return self.candidates[0] if self.candidates else None

    def locks_of(self, member: str) -> list[str]:
        """Locks that ``member`` holds or waits for."""
        return [name for name, info in self.locks.items() if info is not None
                and (info.holder == member or any(w.member == member for w in info.waiters))]


def take_snapshot(coord: moot.Coordinator) -> Snapshot:
    try:
        members = frozenset(coord.group(GROUP).members())
    except GroupNotFound:  # nobody joined yet
        members = frozenset()
    candidates = tuple(coord.election(ELECTION).candidates())
    return Snapshot(members, candidates, {name: coord.lock_info(name) for name in LOCKS})


def lock_text(info: LockInfo | None) -> str:
    if info is None or info.holder is None:
        return "free"
    text = f"{info.holder} holds it, token {info.token}"
    if info.waiters:
        text += "; waiting: " + ", ".join(f"{w.member} (token {w.token})" for w in info.waiters)
    return text


class Narrator:
    """Prints the changes between snapshots, one line each, with the time since start."""

    def __init__(self, out: TextIO):
        self.out = out
        self.started = time.monotonic()
        self.previous = Snapshot(frozenset(), (), dict.fromkeys(LOCKS))
        self.tokens: dict[str, list[int]] = {name: [] for name in LOCKS}
        self.killed: str | None = None
        self.killed_at = 0.0
        #: Locks the killed worker held, and waited for, when it was killed.
        self.killed_held: list[str] = []
        self.killed_waited: list[str] = []
        self.confirmed = False

    def say(self, topic: str, text: str) -> None:
        print(f"{time.monotonic() - self.started:5.1f}s  {topic:<9} {text}", file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def observe(self, now: Snapshot) -> None:
        before = self.previous
        for change, who in (("joined", now.members - before.members), ("left", before.members - now.members)):
            if who:
                self.say("group", f"{', '.join(sorted(who))} {change} ({len(now.members)} members)")
        if now.leader != before.leader:
            waiting = ", ".join(now.candidates[1:]) or "nobody"
            if now.leader is None:
                self.say("leader", "none")
            elif self.killed is not None and before.leader == self.killed:
                self.say("leader", f"NEW LEADER {now.leader}, elected after {self.killed} was killed "
                                   f"(next in line: {waiting})")
            else:
                self.say("leader", f"{now.leader} leads (next in line: {waiting})")
        for name in LOCKS:
            info, old = now.locks[name], before.locks[name]
            if (info.token if info else None) == (old.token if old else None):
                continue
            text = lock_text(info)
            if info is not None and info.token is not None:
                self.tokens[name].append(info.token)
            if self.killed is not None and info is not None and info.holder == self.killed:
                text += " (its process is dead; its session has not expired yet)"
            elif self.killed is not None and old is not None and old.holder == self.killed:
                text += f" ({self.killed}'s hold ended with its process)"
            self.say(name, text)
        self.previous = now
        self._check_aftermath(now)

    def _check_aftermath(self, now: Snapshot) -> None:
        dead = self.killed
        if dead is None or self.confirmed:
            return
        if now.leader not in (None, dead) and dead not in now.members and not now.locks_of(dead):
            self.confirmed = True
            if self.killed_held:
                held = " and ".join(self.killed_held)
                locks = f"{dead}'s lock{'s' if len(self.killed_held) > 1 else ''} {held} freed"
            else:
                locks = f"{dead} held no lock when killed (no lock to free)"
            if self.killed_waited:
                locks += f", its wait for {' and '.join(self.killed_waited)} dropped"
            self.say("check", f"{time.monotonic() - self.killed_at:.1f}s after the kill: new leader "
                              f"{now.leader}, {locks}, {dead} gone from the group: OK")

    def record_kill(self, member: str, now: Snapshot) -> None:
        """``member`` is being killed; ``now`` is the last look at the state."""
        self.killed = member
        self.killed_at = time.monotonic()
        self.killed_held = [name for name, info in now.locks.items() if info is not None and info.holder == member]
        self.killed_waited = [name for name, info in now.locks.items()
                              if info is not None and any(w.member == member for w in info.waiters)]

    def summary(self) -> bool:
        """Print what the run showed; False if something was not as promised."""
        ok = True
        for name, tokens in self.tokens.items():
            increasing = all(a < b for a, b in itertools.pairwise(tokens))
            ok = ok and increasing
            span = f"tokens {tokens[0]} -> {tokens[-1]}" if tokens else "no holder seen"
            verdict = "always increasing" if increasing else "NOT INCREASING"
            self.say("summary", f"{name}: {len(tokens)} holders seen, {span}, {verdict}")
        if self.killed is not None and not self.confirmed:
            ok = False
            self.say("summary", f"the aftermath of killing {self.killed} was not seen before the end")
        return ok


class Demo:
    """The parent: starts the workers, watches, kills the leader, cleans up."""

    def __init__(self, url: str, namespace: str, workers: int, duration: float, out: TextIO):
        self.url = url
        self.namespace = namespace
        self.duration = duration
        self.count = workers
        self.narrator = Narrator(out)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start_workers(self) -> None:
        for index in range(1, self.count + 1):
            argv = [sys.executable, "-m", "moot.demo", "worker", "--url", self.url,
                    "--namespace", self.namespace, "--index", str(index)]
            self.procs[f"worker-{index}"] = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                                             stdout=subprocess.DEVNULL)

    def kill(self, member: str, now: Snapshot) -> None:
        proc = self.procs[member]
        held = [f"{name} (token {info.token})" for name, info in now.locks.items()
                if info is not None and info.holder == member]
        holding = f", holding {', '.join(held)}" if held else ""
        self.narrator.say("KILL", f"SIGKILL to the leader {member} (pid {proc.pid}){holding}")
        proc.kill()
        proc.wait()
        self.narrator.record_kill(member, now)

    def watch(self, coord: moot.Coordinator) -> bool:
        """Narrate until the end; False if a worker died on its own."""
        narrator = self.narrator
        end = narrator.started + self.duration
        kill_at = narrator.started + self.duration * 2 / 3
        healthy = True
        while True:
            clock = time.monotonic()
            if clock >= end and (narrator.killed is None or narrator.confirmed
                                 or clock >= end + AFTERMATH_GRACE):
                return healthy
            now = take_snapshot(coord)
            narrator.observe(now)
            leader = now.leader
            # Kill the leader once it holds a lock, or anyway a little later.
            if narrator.killed is None and clock >= kill_at and leader in self.procs and (
                    any(i is not None and i.holder == leader for i in now.locks.values())
                    or clock >= min(kill_at + 2.0, end - 1.0)):
                self.kill(leader, now)
            for member, proc in self.procs.items():
                if member != narrator.killed and proc.poll() is not None and healthy:
                    healthy = False
                    narrator.say("ERROR", f"{member} exited on its own with status {proc.returncode}")
            time.sleep(POLL_INTERVAL)

    def stop_workers(self) -> None:
        """SIGTERM every worker, SIGKILL those still there after STOP_GRACE, reap all."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def moot_command() -> str:
    """The ``moot`` command of this installation, as a shell word that works
    from the current directory: ``moot`` if that is what PATH finds, else
    the script's path (relative when under the current directory, as
    ``.venv/bin/moot`` after ``make demo``), else ``python -m moot`` with
    this interpreter."""
    schemes = [sysconfig.get_default_scheme()]
    if sysconfig.get_preferred_scheme("user") in sysconfig.get_scheme_names():
        schemes.append(sysconfig.get_preferred_scheme("user"))
    for scheme in schemes:
        script = os.path.join(sysconfig.get_path("scripts", scheme), "moot")
        if not (os.path.isfile(script) and os.access(script, os.X_OK)):
            continue
        on_path = shutil.which("moot")
        if on_path is not None and os.path.realpath(on_path) == os.path.realpath(script):
            return "moot"
        relative = os.path.relpath(script)
        if not relative.startswith(os.pardir):
            return shlex.quote(relative if os.sep in relative else os.path.join(os.curdir, relative))
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m moot"


def watch_hint(url: str, namespace: str) -> str:
    """The command that shows the demo's locks live from another terminal
    (a password in ``url`` shows as ``***``: the line says to put it back)."""
    shown = redact(url)
    ns = "" if namespace == "default" else f" --namespace {shlex.quote(namespace)}"
    command = f"{moot_command()} --url {shlex.quote(shown)}{ns} watch locks"
    return command + ("   (with the password in place of ***)" if shown != url else "")


def run(url: str | None = None, workers: int = 4, duration: float = 20.0, namespace: str = "default",
        out: TextIO | None = None) -> int:
    """Run the demo; returns the exit status (0 when everything went as promised).

    ``url`` None means a fresh temporary file:// directory, removed at the end.
    Raises a MootError for a bad URL or an unreachable backend."""
    out = sys.stdout if out is None else out
    if isinstance(workers, bool) or not 2 <= workers <= 20:
        raise InvalidArgument(f"--workers must be between 2 and 20 (got {workers})")
    if not 3 <= duration <= 3600:
        raise InvalidArgument(f"--duration must be between 3 and 3600 seconds (got {duration:g})")
    if url is not None and parse_url(url).scheme == "memory":
        raise InvalidArgument("memory:// lives inside one process and the demo's workers are processes; "
                              "use file:// or a server URL")
    created = None
    if url is None:
        created = tempfile.mkdtemp(prefix="moot-demo-")
        url = f"file://{created}"
    demo = Demo(url, namespace, workers, duration, out)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # SIGTERM cleans up like Ctrl-C: workers stopped, temp dir removed
        previous = signal.signal(signal.SIGTERM, _parent_on_sigterm)
    try:
        with moot.connect(url, member_id=f"moot-demo-{os.getpid()}", ttl=WORKER_TTL * 2,
                          namespace=namespace) as coord:
            shown = redact(url)
            demo.narrator.note(
                f"moot demo: {workers} worker processes join the group {GROUP!r}, campaign in the election "
                f"{ELECTION!r} and take turns on the locks {' and '.join(LOCKS)} for {duration:g}s;\n"
                f"after about {duration * 2 / 3:.0f}s the leader is killed with SIGKILL.\n"
                f"backend: {shown}\n"
                f"watch it from another terminal:  {watch_hint(url, namespace)}\n")
            demo.start_workers()
            healthy = demo.watch(coord)
            demo.narrator.say("stop", "stopping the workers")
            demo.stop_workers()
            ok = demo.narrator.summary() and healthy
    finally:
        demo.stop_workers()
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moot.demo [--url URL] [--workers N] [--duration SEC]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        wparser = argparse.ArgumentParser(prog="moot.demo worker")
        wparser.add_argument("--url", required=True)
        wparser.add_argument("--namespace", default="default")
        wparser.add_argument("--index", type=int, required=True)
        wargs = wparser.parse_args(argv[1:])
        return worker(wargs.url, wargs.namespace, wargs.index)
    parser = argparse.ArgumentParser(prog="python -m moot.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="backend URL (default: a fresh temporary file:// directory)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    try:
        return run(args.url, args.workers, args.duration, args.namespace)
    except MootError as exc:
        print(f"moot demo: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
