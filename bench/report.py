"""The markdown report of a run: moot and tooz side by side, each target
checked against figures from the same run."""

from __future__ import annotations

import math
from typing import Any

KINDS = ("memory", "file", "redis", "zookeeper", "etcd", "postgresql", "mysql", "memcached")
#: Where tooz's lock is fair (served in arrival order), so its contended rate compares.
FAIR_TOOZ = ("zookeeper", "postgresql")
#: What moot's default session TTL is (moot.coordinator.DEFAULT_TTL); checked by the kill target.
DEFAULT_TTL = 10.0

Result = dict[str, Any]


#: Each workload's headline figure: with ``--runs N`` a step's median run
#: by it stands for the step.
HEADLINE = {"uncontended": "per_second", "contended": "per_second", "members": "p50_ms", "close": "p50_ms",
            "heartbeat": "heartbeat_ms"}


def merge_passes(passes: list[Result]) -> Result:
    """The results of several passes over the same steps, as one pass: per
    step, the run whose headline figure is the median (the lower median
    of an even count), with ``runs``: every figure that all its measuring
    passes gave, as {name: [one value per pass, in order]}. A workload
    without a headline, and any step measured once, keeps its last result
    as it is."""
    merged: Result = {}
    for results in passes:
        for kind, workloads in results.items():
            for workload, systems in workloads.items():
                for system, result in systems.items():
                    merged.setdefault(kind, {}).setdefault(workload, {}).setdefault(system, []).append(result)
    for workloads in merged.values():
        for workload, systems in workloads.items():
            for system, found in systems.items():
                field = HEADLINE.get(workload)
                measured = [r for r in found if field and r.get(field) is not None]
                if len(found) == 1 or not measured:
                    systems[system] = found[-1]
                    continue
                ordered = sorted(measured, key=lambda r: r[field])
                chosen = dict(ordered[(len(ordered) - 1) // 2])
                chosen["runs"] = {name: [r[name] for r in measured] for name, value in chosen.items()
                                  if _figure(value) and all(_figure(r.get(name)) for r in measured)}
                systems[system] = chosen
    return merged


def _figure(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _runs(r: Result | None, field: str) -> list[float] | None:
    """The values of ``field`` over the passes of ``--runs N``, if there were several."""
    found = ((r or {}).get("runs") or {}).get(field)
    return found if found and len(found) > 1 else None


def _get(run: Result, kind: str, workload: str, system: str) -> Result | None:
    found = run.get("results", {}).get(kind, {}).get(workload, {}).get(system)
    return found if found and "error" not in found else None


def _error(run: Result, kind: str, workload: str, system: str) -> str | None:
    found = run.get("results", {}).get(kind, {}).get(workload, {}).get(system)
    return found.get("error") if found else None


def _num(value: float | None, unit: str = "", digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}{unit}"


def ceiling(run: Result, kind: str) -> float | None:
    """The write-pair rate of the engine through moot's client library."""
    libraries = run.get("raw", {}).get(kind) or {}
    first = next(iter(libraries.values()), None)
    return first["ceiling_per_second"] if first else None


class _Table:
    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.met = 0
        self.missed = 0

    def add(self, what: str, kind: str, moot: str, tooz: str, ratio: str, target: str, ok: bool | None) -> None:
        if ok is True:
            self.met += 1
        elif ok is False:
            self.missed += 1
        mark = {True: "yes", False: "**no**", None: "-"}[ok]
        self.rows.append([what, kind, moot, tooz, ratio, target, mark])

    def markdown(self) -> str:
        head = ["workload", "backend", "moot", "tooz", "moot/tooz", "target", "met"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def _ratio(moot: float | None, tooz: float | None, higher_is_better: bool = True) -> str:
    """How much better moot is than tooz ("2.4x better", "1.3x worse")."""
    if not moot or not tooz:
        return "-"
    gain = moot / tooz if higher_is_better else tooz / moot
    return f"{gain:.1f}x better" if gain >= 1 else f"{1 / gain:.1f}x worse"


def _spread(r: Result | None) -> tuple[float, float] | None:
    """The lowest and highest headline over the passes of ``--runs N``;
    with one pass, the lowest and highest rate over its equal windows (see
    ``bench.workloads.window_rates``), if recorded."""
    runs = _runs(r, "per_second")
    if runs:
        return min(runs), max(runs)
    windows = (r or {}).get("per_second_windows")
    return (min(windows), max(windows)) if windows else None


def _within_runs(moot: Result | None, reference: Result | None, field: str, factor: float = 1.0) -> bool:
    """For a time (lower is better) that missed ``factor`` x the
    reference's: whether the passes overlap, moot's best run at or below
    ``factor`` x the reference's worst (run-to-run noise)."""
    mine, theirs = _runs(moot, field), _runs(reference, field)
    return bool(mine and theirs and min(mine) <= factor * max(theirs))


def _ms_cell(r: Result | None, field: str) -> str:
    """A time in ms, with the lowest and highest of the passes when there were several."""
    value, runs = (r or {}).get(field), _runs(r, field)
    if value is None or not runs:
        return _num(value, " ms")
    return _num(value, " ms") + f" ({_num(min(runs), digits=2)}-{_num(max(runs), digits=2)})"


def _rate_cell(r: Result | None) -> str:
    rate, spread = (r or {}).get("per_second"), _spread(r)
    return _num(rate) + (f" ({_num(spread[0])}-{_num(spread[1])})" if rate is not None and spread else "")


def _at_least(moot: Result | None, tooz: Result | None) -> tuple[bool, str]:
    """moot's rate >= tooz's, or within the noise: their window spreads
    overlap. Returns (met, ratio text)."""
    m, t = (moot or {}).get("per_second"), (tooz or {}).get("per_second")
    if m is None or t is None:
        return False, "-"
    if m >= t:
        return True, _ratio(m, t)
    ms, ts = _spread(moot), _spread(tooz)
    if ms and ts and ms[1] >= ts[0]:
        return True, _ratio(m, t) + ", within spread"
    return False, _ratio(m, t)


def targets(run: Result) -> _Table:
    """Every target of the issue, checked on this run's figures."""
    table = _Table()
    kinds = [k for k in KINDS if k in run.get("results", {})]
    for kind in kinds:
        moot, tooz = _get(run, kind, "uncontended", "moot"), _get(run, kind, "uncontended", "tooz")
        if moot is None and tooz is None:
            continue
        m, t = (moot or {}).get("per_second"), (tooz or {}).get("per_second")
        top = ceiling(run, kind)
        ok: bool | None = None
        target = "-"
        met, ratio = _at_least(moot, tooz)
        if kind == "memory":
            pass
        elif kind == "redis" and top:
            target = f">= tooz and >= 70% of ceiling {_num(top)}/s ({_num(100 * m / top if m else None)}%)"
            ok = met and m is not None and m >= 0.7 * top
        else:
            target = ">= tooz"
            ok = met
        table.add("acquire+release /s", kind, _rate_cell(moot), _rate_cell(tooz), ratio, target, ok)
    for kind in kinds:
        moot, tooz = _get(run, kind, "contended", "moot"), _get(run, kind, "contended", "tooz")
        if moot is None and tooz is None:
            continue
        shares = [(r or {}).get("share") for r in (moot, tooz)]
        text = ["/".join(f"{100 * s:.0f}" for s in share) + " %" if share else "-" for share in shares]
        ok = bool(shares[0]) and all(0.20 <= s <= 0.30 for s in shares[0] or [])
        table.add("4 procs, hold 1 ms: share", kind, text[0], text[1], "-", "each 25% +/- 5%", ok)
    for kind in kinds:  # where tooz is fair too, moot must also serve as many
        moot, tooz = _get(run, kind, "contended", "moot"), _get(run, kind, "contended", "tooz")
        if moot is None or tooz is None or kind not in FAIR_TOOZ:
            continue
        met, ratio = _at_least(moot, tooz)
        table.add("4 procs, hold 1 ms: acquisitions/s", kind, _rate_cell(moot), _rate_cell(tooz), ratio,
                  ">= tooz", met)
        m, t = moot["handoff_p50_ms"], tooz["handoff_p50_ms"]
        ratio, ok = _ratio(m, t, False), m <= t
        if not ok and _within_runs(moot, tooz, "handoff_p50_ms"):
            ok, ratio = True, ratio + ", within spread"
        table.add("4 procs: handoff p50", kind, _ms_cell(moot, "handoff_p50_ms"), _ms_cell(tooz, "handoff_p50_ms"),
                  ratio, "<= tooz", ok)
    for kind in kinds:
        moot, tooz = _get(run, kind, "contended", "moot"), _get(run, kind, "contended", "tooz")
        if moot is None and tooz is None:
            continue
        limit = 1.0 if kind in ("file", "redis", "memory") else 2.0
        p99_limit = 50 if kind in ("mysql", "memcached") else 10  # no notifications: polling wakes waiters
        cells = [f"{_num(r['handoff_p50_ms'])} / {_num(r['handoff_p99_ms'])} ms" if r else "-" for r in (moot, tooz)]
        ok = moot is not None and moot["handoff_p99_ms"] < p99_limit and (
            kind in ("mysql", "memcached", "postgresql") or moot["handoff_p50_ms"] < limit)
        ratio = _ratio((moot or {}).get("handoff_p99_ms"), (tooz or {}).get("handoff_p99_ms"), False)
        table.add("handoff p50 / p99", kind, cells[0], cells[1], ratio + " (p99)" if ratio != "-" else ratio,
                  f"p99 < {p99_limit} ms" if kind in ("mysql", "memcached", "postgresql")
                  else f"p50 < {limit:g} ms, p99 < 10 ms", ok)
    for kind in kinds:
        moot, tooz = _get(run, kind, "contended", "moot"), _get(run, kind, "contended", "tooz")
        if moot is None and tooz is None:
            continue
        m, t = (moot or {}).get("longest_wait_ms"), (tooz or {}).get("longest_wait_ms")
        table.add("longest single wait", kind, _num(m, " ms"), _num(t, " ms"), _ratio(m, t, False), "< 50 ms",
                  m is not None and m < 50)
    for kind in kinds:
        moot, tooz = _get(run, kind, "heartbeat", "moot"), _get(run, kind, "heartbeat", "tooz")
        if moot is None and tooz is None:
            continue

        def cell(r: Result | None) -> str:
            if r is None:
                return "-"
            requests = "" if r["requests"] is None else f"{r['requests']} req, "
            return f"{requests}{_num(r['heartbeat_ms'], ' ms', 3 if r['heartbeat_ms'] < 1 else None)}"

        server = kind in ("redis", "zookeeper", "etcd", "mysql", "memcached")  # whose requests are counted
        ok = (moot is not None and moot["requests"] == 1) if server else None
        held = (moot or tooz or {}).get("locks")
        table.add(f"heartbeat, {held} locks held", kind, cell(moot), cell(tooz), "-",
                  "1 request" if server else "-", ok)
    for kind in kinds:
        moot, tooz = _get(run, kind, "kill", "moot"), _get(run, kind, "kill", "tooz")
        if moot is None and tooz is None:
            continue

        def cell(r: Result | None) -> str:
            if r is None:
                return "-"
            bound = f"> {r['bound_s']:g} s"
            lock = bound if r["lock_free_s"] is None else _num(r["lock_free_s"], " s", 3)
            gone = bound if r["member_gone_s"] is None else _num(r["member_gone_s"], " s", 3)
            return f"{lock} / {gone}"

        # memcached counts expiry in whole seconds: moot gives its sessions ceil(ttl) + 2 s (docs/backends.md)
        limit = 0.1 if kind == "file" else math.ceil(DEFAULT_TTL) + 2 if kind == "memcached" else DEFAULT_TTL
        ok = (moot is not None and moot["lock_free_s"] is not None and moot["member_gone_s"] is not None
              and max(moot["lock_free_s"], moot["member_gone_s"]) < limit)
        table.add("SIGKILLed holder: lock free / member gone", kind, cell(moot), cell(tooz), "-",
                  f"< {limit:g} s" + ({"file": "", "memcached": " (ceil(TTL) + 2)"}.get(kind, " (TTL)")), ok)
    zk = _get(run, "zookeeper", "members", "tooz") or _get(run, "zookeeper", "members", "moot")
    reference = zk["p50_ms"] if zk else None
    for kind in kinds:
        moot, tooz = _get(run, kind, "members", "moot"), _get(run, kind, "members", "tooz")
        if moot is None and tooz is None:
            continue
        m, t = (moot or {}).get("p50_ms"), (tooz or {}).get("p50_ms")
        size = (moot or tooz or {}).get("members")
        ratio = _ratio(m, t, False)
        ok = None if reference is None else m is not None and m <= 2 * reference
        if ok is False and _within_runs(moot, zk, "p50_ms", factor=2.0):
            ok, ratio = True, ratio + ", within spread"
        target = f"<= 2x ZooKeeper ({_num(2 * reference, ' ms') if reference else '-'})"
        table.add(f"members() of {size}, p50", kind, _ms_cell(moot, "p50_ms"), _ms_cell(tooz, "p50_ms"), ratio,
                  target, ok)
    for kind in kinds:
        moot, tooz = _get(run, kind, "work", "moot"), _get(run, kind, "work", "tooz")
        if moot is None or moot.get("counted") is None:
            continue
        for what, field in (("acquire+release", "acquire_release"), ("handoff", "handoff")):
            m, t = moot[field], (tooz or {}).get(field)
            table.add(f"requests per {what}", kind, _num(m), _num(t), _ratio(m, t, False), "<= tooz",
                      t is not None and m <= t)
    for kind in kinds:
        moot, tooz = _get(run, kind, "close", "moot"), _get(run, kind, "close", "tooz")
        if moot is None and tooz is None:
            continue
        m, t = (moot or {}).get("p50_ms"), (tooz or {}).get("p50_ms")
        table.add("close(), p50", kind, _num(m, " ms"), _num(t, " ms"), _ratio(m, t, False), "< 50 ms",
                  m is not None and m < 50)
    return table


def _tooz_api_table(run: Result) -> str:
    """tooz's API on tooz's own driver next to tooz's API over moot (``moot+<scheme>``), 4 processes on one lock."""
    lines = ["| backend | tooz driver: share | over moot: share | tooz driver: longest wait "
             "| over moot: longest wait |", "|---|---|---|---|---|"]
    for kind in KINDS:
        own, over = _get(run, kind, "contended", "tooz"), _get(run, kind, "contended", "tooz-on-moot")
        if over is None:
            continue
        cells = []
        for r in (own, over):
            cells.append("/".join(f"{100 * s:.0f}" for s in r["share"]) + " %" if r and r.get("share") else "-")
        waits = [_num(r.get("longest_wait_ms"), " ms") if r else "-" for r in (own, over)]
        lines.append(f"| {kind} | {cells[0]} | {cells[1]} | {waits[0]} | {waits[1]} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def scaling_results(run: Result) -> dict[str, Result]:
    """moot's scaling results by backend, those that ran without an error."""
    found = {kind: _get(run, kind, "scaling", "moot") for kind in KINDS}
    return {kind: result for kind, result in found.items() if result}


def scaling_value(r: Result, series: str, n: int) -> Any:
    """The figure of ``series`` at size ``n`` in one backend's scaling result, None if not measured."""
    return r.get(series, {}).get(str(n), r.get(series, {}).get(n))  # JSON keys are text


def _scaling_cell(r: Result, series: str, n: int) -> str:
    value = scaling_value(r, series, n)
    if value is None:
        return "-"
    if series == "handoff_requests":
        if isinstance(value, dict):  # with what the idle window counted (runs from 2026-12-04 on)
            idle = value["idle"]
            return _num(value["requests"], digits=0) + (f" (idle {idle})" if idle else "")
        return _num(value, digits=0)
    if series == "heartbeat_ms":
        return _num(value, " ms")
    if series == "members":
        return f"{_num(value['members_ms'], ' ms')} / {_num(value['member_ids_ms'], ' ms')}"
    if series == "threads_per_second":
        return _num(value)
    return f"{value['fds']} fds, {value['sockets']} sockets"


#: The scaling series: (key in the results, key in the sizes, row label).
_SCALING_ROWS = (
    ("handoff_requests", "handoff", "requests per handoff, {n:,} waiting"),
    ("heartbeat_ms", "heartbeat", "heartbeat, {n:,} locks held"),
    ("members", "members", "members() / member_ids(), {n:,} members"),
    ("threads_per_second", "threads", "acquire+release/s, {n:,} threads on their own locks"),
    ("waiting", "waiting", "one process waiting on {n:,} locks"),
)


def _scaling_table(run: Result) -> str:
    """How moot's cost grows: one row per measure and size, one column per backend."""
    found = scaling_results(run)
    if not found:
        return ""
    lines = ["| measure | " + " | ".join(found) + " |", "|---|" + "---|" * len(found)]
    sizes = next(iter(found.values()))["sizes"]
    for series, size_key, label in _SCALING_ROWS:
        for n in sizes[size_key]:
            cells = [_scaling_cell(r, series, n) for r in found.values()]
            lines.append(f"| {label.format(n=n)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _raw_table(run: Result) -> str:
    lines = ["| engine | client library | read round trip p50 | reads/s | write pair (create+delete)/s = ceiling |",
             "|---|---|---|---|---|"]
    for kind, libraries in run.get("raw", {}).items():
        for library, r in libraries.items():
            lines.append(f"| {kind} | {library} | {_num(r['read']['p50_us'], ' us')} | "
                         f"{_num(r['read']['per_second'])} | {_num(r['ceiling_per_second'])} |")
    return "\n".join(lines)


def _errors(run: Result) -> list[str]:
    out = []
    for kind, workloads in run.get("results", {}).items():
        for workload, systems in workloads.items():
            for system, result in systems.items():
                if "error" in result:
                    first = result["error"].strip().splitlines()[-1]
                    out.append(f"- {kind} / {workload} / {system}: {first}")
                for error in result.get("errors") or []:
                    out.append(f"- {kind} / {workload} / {system} (a child): {error.strip().splitlines()[-1]}")
    return out


def spread_text(run: Result) -> str:
    """What the ranges in brackets are, for this run."""
    passes = run.get("passes", 1)
    if passes > 1:
        return (f"Every step ran {passes} times, one pass after another (`--runs {passes}`): a figure is its "
                f"median run's, and the brackets give the lowest and highest of the {passes} runs. A figure "
                "worse than its target counts as met when the ranges overlap (within spread: run-to-run noise).")
    return ("Rates per second give in brackets the lowest and highest rate over three equal windows of the "
            "same measurement; a rate below tooz's counts as met when the two ranges overlap (within spread).")


def markdown(run: Result, plot: str | None = None, scaling_plot: str | None = None) -> str:
    env = run.get("environment", {})
    machine = env.get("machine", {})
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    servers = ", ".join(v for v in env.get("servers", {}).values() if v)
    table = targets(run)
    parts = [
        f"Run of {run.get('started', '?')} ({'quick' if run.get('quick') else 'full'}, "
        f"{run.get('seconds', 0):.0f} s): `{run.get('command', 'python -m bench')}`",
        "",
        f"Machine: {machine.get('nproc')} cores, {machine.get('cpu')}, Linux {machine.get('kernel')}; "
        f"load average {machine.get('load_at_start')} at start, {run.get('load_at_end')} at end. "
        f"Python {env.get('python')}; servers on loopback: {servers or '-'}; {packages}.",
        "",
        f"Targets met: {table.met}, missed: {table.missed}.",
        "",
        table.markdown(),
        "",
        spread_text(run),
        "",
        "Engine limits, measured in the same run with the bare client library:",
        "",
        _raw_table(run),
    ]
    scaling = _scaling_table(run)
    if scaling:
        parts += ["", "How moot's cost grows with the work (moot alone, same run):", "", scaling, "",
                  "Requests per handoff are counted from the holder's release to the first waiter's acquire "
                  "returning, less the same window with nothing released; in brackets, what that idle window "
                  "counted where it was not 0 (the waiters' polls on MySQL: a figure below it is noise)."]
        if scaling_plot:
            parts += ["", f"![moot's cost as the work grows]({scaling_plot})"]
    tooz_api = _tooz_api_table(run)
    if tooz_api:
        parts += ["", "tooz's API, 4 processes on one lock: tooz's own driver, and moot's tooz driver "
                  "(`moot+<scheme>://`, the same server):", "", tooz_api]
    if plot:
        parts += ["", f"![handoff latency]({plot})"]
    errors = _errors(run)
    if errors:
        parts += ["", "Errors:", "", *errors]
    return "\n".join(parts) + "\n"

