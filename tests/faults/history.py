"""The checks of the fault suite, run on one recorded history.

A history is what the workers logged (see ``worker.py``), what the fenced
register saw (``register.Attempt``), the faults the test injected and the
membership recoveries it measured. Every instant is ``time.monotonic()``
(CLOCK_MONOTONIC, one clock for all processes of the machine).

Checks (each failure is one violation, stated with its evidence):

1. *overlap*: no two live holders overlap. An acquisition is live from the
   instant ``acquire()`` returned to the first of: ``release()`` called, the
   holder told it lost the lock (``on_lost`` ran, or ``is_held`` read
   False), the process SIGKILLed or SIGSTOPped (instants known to the test).
2. *stale-accepted*: the register never accepts a stale token: accepted
   writes from different processes carry strictly increasing tokens.
3. *token-order*: every acquisition's token is greater than the token of
   every acquisition that ended before it began (and no token twice).
4. *stale-holder*: a holder that loses the lock knows it before anyone else
   acquires: no ``is_held`` True read by a holder after another process
   acquired the lock (that covers a paused holder resumed after its lease
   ran out), and a holder that was running (not stopped) is told before the
   next acquisition (its ``on_lost`` time is an upper bound on when
   ``is_held`` turned False). Figures: the margin (next acquisition minus
   told) and the longest running time a stale holder believed it held.
5. *membership*: after an outage heals, every live worker is listed in the
   group again within the stated bound (measured by the test).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from tests.faults.register import Attempt


@dataclasses.dataclass
class Fault:
    """One injected fault. ``start``/``end``: when it took effect and when it
    was undone (process stopped/resumed, proxy cut/healed, engine killed/back)."""

    kind: str
    start: float
    end: float | None = None
    pid: int | None = None  # the targeted worker, for process and partition faults
    note: str = ""


@dataclasses.dataclass
class Membership:
    """Time from an outage's end until every live worker was listed again."""

    fault: str
    healed_at: float
    bound: float
    took: float | None  # None: not back when the test stopped waiting
    missing: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Acquisition:
    pid: int
    token: int
    acquired: float
    released: float | None = None
    told: float | None = None
    killed: float | None = None
    stopped: float | None = None  # first SIGSTOP while holding
    last_true_read: float | None = None

    @property
    def end(self) -> float:
        ends = [t for t in (self.released, self.told, self.killed, self.stopped) if t is not None]
        return min(ends) if ends else math.inf


@dataclasses.dataclass
class Report:
    acquisitions: int = 0
    writes: int = 0
    rejected: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    violations: list[str] = dataclasses.field(default_factory=list)
    worst_margin: float | None = None  # smallest (next acquire - told) over lost holds, s
    longest_stale_belief: float = 0.0  # s a running stale holder believed it held
    resume_to_told: float | None = None  # longest time from SIGCONT to on_lost, s
    membership_worst: float | None = None
    membership_bound: float | None = None
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    #: violations of checks this scenario does not promise (its fault breaks their precondition)
    excused: list[str] = dataclasses.field(default_factory=list)

    def classify(self, promised: set[str]) -> None:
        """Move violations of checks not in ``promised`` to :attr:`excused`."""
        kept = [v for v in self.violations if v.split(":", 1)[0] in promised]
        self.excused += [v for v in self.violations if v not in kept]
        self.violations = kept

    def line(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:+.0f}ms"

        faults = ",".join(f"{k}:{v}" for k, v in sorted(self.faults.items())) or "none"
        return (f"acquisitions {self.acquisitions}, writes {self.writes} ({self.rejected} rejected), "
                f"faults {faults}, violations {len(self.violations)}, worst margin {ms(self.worst_margin)}, "
                f"longest stale belief {self.longest_stale_belief * 1000:.0f}ms, "
                f"resume->told {ms(self.resume_to_told)}, membership back in "
                f"{'-' if self.membership_worst is None else f'{self.membership_worst:.2f}s'}"
                f"{'' if self.membership_bound is None else f' (bound {self.membership_bound:.1f}s)'}"
                + (f"; NOT PROMISED here and seen: {len(self.excused)} ({_kinds(self.excused)})"
                   if self.excused else ""))


def _kinds(violations: list[str]) -> str:
    return ", ".join(f"{k} x{n}" for k, n in collections.Counter(v.split(":", 1)[0] for v in violations).items())


def _intervals(faults: Iterable[Fault], kind: str) -> dict[int, list[tuple[float, float]]]:
    found: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    for fault in faults:
        if fault.kind == kind and fault.pid is not None:
            found[fault.pid].append((fault.start, math.inf if fault.end is None else fault.end))
    return found


def _overlap(span: tuple[float, float], intervals: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(span[1], b) - max(span[0], a)) for a, b in intervals)


def acquisitions(events: list[dict[str, Any]], faults: list[Fault], run_end: float) -> list[Acquisition]:
    """Every acquisition, with its end and how it ended."""
    kills = {f.pid: f.start for f in faults if f.kind == "sigkill" and f.pid is not None}
    stops = _intervals(faults, "sigstop")
    by_pid: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for event in events:
        by_pid[event["pid"]].append(event)
    found: list[Acquisition] = []
    for pid, evs in by_pid.items():
        evs.sort(key=lambda e: e["t"])
        current: Acquisition | None = None
        by_token: dict[int, Acquisition] = {}
        for event in evs:
            ev = event["ev"]
            if ev == "acq":
                current = Acquisition(pid, event["token"], event["t"])
                by_token[current.token] = current
                found.append(current)
            elif ev in ("lost", "seen_lost") and event.get("token") in by_token:
                acq = by_token[event["token"]]
                acq.told = event["t"] if acq.told is None else min(acq.told, event["t"])
            elif ev == "rel" and current is not None and current.token == event.get("token"):
                current.released = event["t"]
                current = None
        for acq in by_token.values():
            killed = kills.get(pid)
            if killed is not None and killed >= acq.acquired:
                acq.killed = killed
            for start, _ in stops.get(pid, []):
                if acq.acquired <= start < acq.end and acq.stopped is None:
                    acq.stopped = start
            if acq.end == math.inf:  # never released nor told: live until the run ended
                acq.released = run_end
    found.sort(key=lambda a: a.acquired)
    return found


def analyse(events: list[dict[str, Any]], attempts: list[Attempt], faults: list[Fault],
            memberships: list[Membership], run_end: float) -> Report:
    report = Report()
    acqs = acquisitions(events, faults, run_end)
    report.acquisitions = len(acqs)
    report.writes = len(attempts)
    report.rejected = sum(not a.accepted for a in attempts)
    report.faults = dict(collections.Counter(f.kind for f in faults))
    for event in events:
        if event["ev"] == "err":
            key = f"{event['what']}: {event['error'].split(':')[0]}"
            report.errors[key] = report.errors.get(key, 0) + 1
    stops = _intervals(faults, "sigstop")
    violations = report.violations

    # 1. no two live holders overlap
    active: list[Acquisition] = []
    for acq in acqs:
        active = [a for a in active if a.end > acq.acquired]
        for other in active:
            if other.pid != acq.pid:
                violations.append(
                    f"overlap: pid {other.pid} token {other.token} live {other.acquired:.3f}..{other.end:.3f} "
                    f"and pid {acq.pid} token {acq.token} acquired {acq.acquired:.3f} "
                    f"({(min(other.end, acq.end) - acq.acquired) * 1000:.0f} ms together)")
        active.append(acq)

    # 2. the register never accepts a stale token
    last: Attempt | None = None
    for attempt in attempts:
        if not attempt.accepted:
            continue
        if attempt.token < attempt.highest_before:
            violations.append(f"stale-accepted: token {attempt.token} accepted after {attempt.highest_before}")
        if last is not None and last.pid != attempt.pid and attempt.token <= last.token:
            violations.append(
                f"stale-accepted: pid {attempt.pid} token {attempt.token} accepted at {attempt.received_at:.3f} "
                f"after pid {last.pid} token {last.token} (a reused token)")
        last = attempt

    # 3. tokens grow
    seen: dict[int, Acquisition] = {}
    for acq in acqs:
        if acq.token in seen:
            first = seen[acq.token]
            violations.append(f"token-order: token {acq.token} issued twice (pid {first.pid} at "
                              f"{first.acquired:.3f}, pid {acq.pid} at {acq.acquired:.3f})")
        seen.setdefault(acq.token, acq)
    ended = sorted(acqs, key=lambda a: a.end)
    highest: Acquisition | None = None
    index = 0
    for acq in acqs:  # by acquired time
        while index < len(ended) and ended[index].end < acq.acquired:
            if highest is None or ended[index].token > highest.token:
                highest = ended[index]
            index += 1
        if highest is not None and acq.token < highest.token:
            violations.append(
                f"token-order: pid {acq.pid} got token {acq.token} at {acq.acquired:.3f}, lower than token "
                f"{highest.token} of pid {highest.pid} whose hold ended at {highest.end:.3f}")

    # 4. a losing holder is told before anyone else acquires
    reads: dict[tuple[int, int], list[float]] = collections.defaultdict(list)
    for attempt in attempts:
        reads[(attempt.pid, attempt.token)].append(attempt.checked_at)
    for position, acq in enumerate(acqs):
        successor = next((b for b in acqs[position + 1:] if b.pid != acq.pid), None)
        if successor is None:
            continue
        lost = acq.told is not None or acq.released is None or acq.released > successor.acquired
        if not lost or (acq.killed is not None and acq.killed < successor.acquired):
            continue
        stale_reads = [t for t in reads.get((acq.pid, acq.token), []) if t > successor.acquired]
        if stale_reads:
            violations.append(
                f"stale-holder: pid {acq.pid} read is_held True for token {acq.token} "
                f"{(max(stale_reads) - successor.acquired) * 1000:.0f} ms after pid {successor.pid} "
                f"acquired token {successor.token} at {successor.acquired:.3f} ({len(stale_reads)} reads)")
        told = acq.told
        paused = stops.get(acq.pid, [])
        belief_end = max([t for t in (told, *stale_reads) if t is not None], default=None)
        if belief_end is None:
            belief_end = acq.released if acq.released is not None else run_end
        running = (belief_end - successor.acquired) - _overlap((successor.acquired, belief_end), paused)
        report.longest_stale_belief = max(report.longest_stale_belief, running)
        was_paused = _overlap((acq.acquired, belief_end), paused) > 0
        if was_paused:
            resumed = [b for a, b in paused if acq.acquired <= a < belief_end and b != math.inf]
            if told is not None and resumed:
                after = told - max(b for b in resumed if b <= told) if any(b <= told for b in resumed) else None
                if after is not None:
                    report.resume_to_told = max(report.resume_to_told or 0.0, after)
            continue
        if told is not None:
            margin = successor.acquired - told
            report.worst_margin = margin if report.worst_margin is None else min(report.worst_margin, margin)
            if margin <= 0:
                violations.append(
                    f"stale-holder: pid {acq.pid} (token {acq.token}) told at {told:.3f}, "
                    f"{-margin * 1000:.0f} ms after pid {successor.pid} acquired token {successor.token}")
        elif acq.released is not None and acq.released > successor.acquired:
            violations.append(
                f"stale-holder: pid {acq.pid} (token {acq.token}) never told, held until {acq.released:.3f}, "
                f"while pid {successor.pid} acquired token {successor.token} at {successor.acquired:.3f}")

    # 5. memberships come back
    for m in memberships:
        if m.took is not None:
            report.membership_worst = max(report.membership_worst or 0.0, m.took)
        report.membership_bound = m.bound
        if m.took is None or m.took > m.bound:
            back = "not back" if m.took is None else f"back only after {m.took:.2f}s"
            violations.append(f"membership: after {m.fault} healed at {m.healed_at:.3f}, {back} "
                              f"(bound {m.bound:.1f}s); missing {m.missing}")
    return report
