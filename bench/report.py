"""The markdown report of a run: moot and tooz side by side, each target
checked against figures from the same run."""

from __future__ import annotations

import math
from typing import Any

KINDS = ("memory", "file", "redis", "zookeeper", "etcd", "postgresql", "mysql", "memcached")
#: What moot's default session TTL is (moot.coordinator.DEFAULT_TTL); checked by the kill target.
DEFAULT_TTL = 10.0

Result = dict[str, Any]


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
        if kind == "redis" and top:
            target = f">= 70% of ceiling {_num(top)}/s"
            ok = m is not None and m >= 0.7 * top
            target += f" ({_num(100 * m / top if m else None)}%)"
        elif kind in ("file", "postgresql", "mysql", "memcached"):
            target = ">= tooz"
            ok = m is not None and t is not None and m >= t
        elif kind in ("zookeeper", "etcd") and top:
            target = f">= 2x tooz and >= 50% of ceiling {_num(top)}/s ({_num(100 * m / top if m else None)}%)"
            ok = m is not None and t is not None and m >= 2 * t and m >= 0.5 * top
        table.add("acquire+release /s", kind, _num(m), _num(t), _ratio(m, t), target, ok)
    for kind in kinds:
        moot, tooz = _get(run, kind, "contended", "moot"), _get(run, kind, "contended", "tooz")
        if moot is None and tooz is None:
            continue
        shares = [(r or {}).get("share") for r in (moot, tooz)]
        text = ["/".join(f"{100 * s:.0f}" for s in share) + " %" if share else "-" for share in shares]
        ok = bool(shares[0]) and all(0.20 <= s <= 0.30 for s in shares[0] or [])
        table.add("4 procs, hold 1 ms: share", kind, text[0], text[1], "-", "each 25% +/- 5%", ok)
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
        ok = None if reference is None else m is not None and m <= 2 * reference
        target = f"<= 2x ZooKeeper ({_num(2 * reference, ' ms') if reference else '-'})"
        table.add(f"members() of {size}, p50", kind, _num(m, " ms"), _num(t, " ms"), _ratio(m, t, False), target,
                  ok)
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


def markdown(run: Result, plot: str | None = None) -> str:
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
        "Engine limits, measured in the same run with the bare client library:",
        "",
        _raw_table(run),
    ]
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

