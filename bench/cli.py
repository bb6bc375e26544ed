"""``python -m bench``: measure moot and tooz on the same servers, in the same run.

Starts its own servers (``tests/servers.py``: loopback, free ports, stopped
at the end) on each engine's production settings (``servers.PRODUCTION``:
fsync on, default timing; never the test suite's fast settings), runs the
selected workloads per backend and system, and writes
``bench/results/bench-<time>.{json,md,png}`` and ``bench-<time>-scaling.png`` (the markdown also goes to
stdout). Progress goes to stderr. ``--report FILE.json`` redraws the table
and the plot of an earlier run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import engines, environment, plot, report
from bench.systems import SYSTEMS, TOOZ_ON_MOOT_WORKLOADS
from bench.workloads import MOOT_ONLY, MULTIPROCESS, WORKLOADS, Params, kill_all

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SERVER_KINDS = ("redis", "zookeeper", "etcd", "postgresql", "mysql", "memcached")
ALL_WORKLOADS = ("raw", *WORKLOADS)


class Progress:
    """One stderr line per step, with the time elapsed since the start; notes
    inside a step give the time since the step began, and every step's
    duration is kept (:attr:`durations`) for the JSON and the closing summary."""

    def __init__(self, steps: int):
        self.started = time.monotonic()
        self.steps = steps
        self.step = 0
        self._step_started = self.started
        self._what: tuple[str, ...] = ()
        #: [backend, system, workload, seconds] of every finished step, in order.
        self.durations: list[list[Any]] = []

    def _stamp(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        return f"[{elapsed // 60:2d}:{elapsed % 60:02d}]"

    def begin(self, kind: str, system: str, workload: str) -> None:
        self.step += 1
        self._step_started = time.monotonic()
        self._what = (kind, system, workload)
        print(f"{self._stamp()} {self.step:3d}/{self.steps} {kind:<10} {system:<12} {workload} ...",
              file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        took = time.monotonic() - self._step_started
        print(f"{self._stamp()}          +{took:5.1f} s {text}", file=sys.stderr, flush=True)

    def end(self, text: str) -> None:
        took = time.monotonic() - self._step_started
        self.durations.append([*self._what, round(took, 2)])
        print(f"{self._stamp()}          -> {text} ({took:.1f} s)", file=sys.stderr, flush=True)

    def say(self, text: str) -> None:
        print(f"{self._stamp()} {text}", file=sys.stderr, flush=True)

    def summary(self) -> str:
        """Seconds per workload and per backend, over the steps run."""
        def total(index: int) -> str:
            sums: dict[str, float] = {}
            for row in self.durations:
                sums[row[index]] = sums.get(row[index], 0.0) + row[3]
            return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(sums.items(), key=lambda x: -x[1]))

        return f"time per workload: {total(2)}\ntime per backend: {total(0)}"


def _csv(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return chosen


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(report.KINDS),
                        help="comma-separated: " + ",".join(report.KINDS) + " (default: all)")
    parser.add_argument("--workloads", default=None,
                        help="comma-separated: " + ",".join(ALL_WORKLOADS) + " (default: all; --quick: all but kill)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="moot,tooz,tooz-on-moot (default: all)")
    parser.add_argument("--quick", action="store_true", help="shorter loops and smaller groups (a smoke run)")
    parser.add_argument("--out", default=str(RESULTS), help="directory for the results (default: bench/results)")
    parser.add_argument("--runs", type=int, default=1, metavar="N",
                        help="run the selected steps N times (1-9), one pass after another; each figure is then "
                             "its median run's, with the lowest and highest of the N beside it (default: 1)")
    parser.add_argument("--report", metavar="FILE.json", help="only redraw the table and plot of an earlier run")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 9:
        parser.error(f"--runs takes 1 to 9 passes, not {args.runs}")
    return args


def _summary(workload: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + str(r["error"]).strip().splitlines()[-1]
    if workload == "raw":
        return "; ".join(f"{lib}: rtt {v['read']['p50_us']:.0f} us, pair {v['ceiling_per_second']:,.0f}/s"
                         for lib, v in r.items())
    if workload == "uncontended":
        return f"{r['per_second']:,.0f}/s (p50 {r['p50_us']:.0f} us)"
    if workload == "contended":
        share = "/".join(f"{100 * s:.0f}" for s in r["share"])
        return (f"{r['acquisitions']} acquisitions, share {share} %, handoff p50 {r['handoff_p50_ms']:.2f} "
                f"p99 {r['handoff_p99_ms']:.1f} ms, longest wait {r['longest_wait_ms']:.0f} ms")
    if workload == "heartbeat":
        return f"{r['requests']} requests, {r['heartbeat_ms']:.2f} ms ({r['locks']} locks)"
    if workload == "kill":
        def seconds(value: float | None) -> str:
            return f"> {r['bound_s']:g} s" if value is None else f"{value:.3f} s"

        return f"lock free after {seconds(r['lock_free_s'])}, member gone after {seconds(r['member_gone_s'])}"
    if workload == "members":
        return f"{r['members']} members, members() p50 {r['p50_ms']:.2f} ms"
    if workload == "close":
        return f"close() p50 {r['p50_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
    if workload == "scaling":
        return "see the scaling table"
    if workload == "work":
        if r["counted"] is None:
            return "no server to count"
        return f"acquire+release {r['acquire_release']:g} requests, handoff {r['handoff']:g}"
    return ""


def _plan(kinds: list[str], workloads: list[str], systems: list[str]) -> list[tuple[str, str, str]]:
    steps = []
    for kind in kinds:
        for workload in workloads:
            if workload == "raw":
                if kind in SERVER_KINDS:
                    steps.append((kind, workload, "engine"))
                continue
            if kind == "memory" and workload in MULTIPROCESS:
                continue
            for system in systems:
                if system != "moot" and kind == "memory":
                    continue  # tooz has no in-process driver, and moot+memory is one process
                if system == "tooz-on-moot" and workload not in TOOZ_ON_MOOT_WORKLOADS:
                    continue
                if system != "moot" and workload in MOOT_ONLY:
                    continue
                steps.append((kind, workload, system))
    return steps


def _run_pass(steps: list[tuple[str, str, str]], urls: dict[str, str], params: Params, progress: Progress,
              raw: dict[str, Any], results: dict[str, Any], save: Callable[[], None]) -> None:
    """Every step once: engine limits into ``raw`` (the last pass's are
    kept), the rest into ``results``; ``save()`` after each step."""
    killed: dict[tuple[str, str], dict[str, Any]] | None = None  # every kill step runs in the first
    for kind, workload, system in steps:
        progress.begin(kind, system, workload)
        result: dict[str, Any]
        try:
            if workload == "kill":
                if killed is None:
                    victims = [(s, k, urls[k]) for k, w, s in steps if w == "kill"]
                    killed = kill_all(victims, params, progress.note)
                result = killed[(kind, system)]
            elif workload == "raw":
                result = engines.raw(kind, urls[kind], params.raw_ops, params.raw_seconds)
                raw[kind] = result
            else:
                result = WORKLOADS[workload](system, kind, urls[kind], params, progress.note)
        except Exception:
            result = {"error": traceback.format_exc(limit=8)}
        if workload != "raw":
            results.setdefault(kind, {}).setdefault(workload, {})[system] = result
        progress.end(_summary(workload, result))
        save()


def write_outputs(run: dict[str, Any], base: Path) -> tuple[Path, Path, list[Path]]:
    """The JSON, the markdown, and the plots there are results for."""
    json_path = base.with_suffix(".json")
    json_path.write_text(json.dumps(run, indent=1))
    handoffs, growth = base.with_suffix(".png"), base.with_name(base.name + "-scaling.png")
    drawn = [path if draw(run, str(path)) else None
             for draw, path in ((plot.handoff_cdf, handoffs), (plot.scaling, growth))]
    md_path = base.with_suffix(".md")
    md_path.write_text(report.markdown(run, *(path.name if path else None for path in drawn)))
    return json_path, md_path, [path for path in drawn if path]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report:
        earlier = json.loads(Path(args.report).read_text())
        _, md_path, _ = write_outputs(earlier, Path(args.report).with_suffix(""))
        sys.stdout.write(md_path.read_text())
        return 0
    params = Params.quick() if args.quick else Params()
    kinds = _csv(args.backends, report.KINDS, "backend")
    default = [w for w in ALL_WORKLOADS if not (args.quick and w == "kill")]
    workloads = _csv(args.workloads, ALL_WORKLOADS, "workload") if args.workloads else default
    systems = _csv(args.systems, SYSTEMS, "system")
    missing = [name for name in ("tooz", "etcd3gw", "matplotlib") if importlib.util.find_spec(name) is None
               and (name == "matplotlib" or any(s.startswith("tooz") for s in systems))]
    if missing:
        raise SystemExit(f"the bench needs {', '.join(missing)}: {sys.executable} -m pip install -r "
                         f"{REPO / 'bench' / 'requirements.txt'}   (or measure moot alone: --systems moot)")
    steps = _plan(kinds, workloads, systems)
    progress = Progress(len(steps) * args.runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = out / f"bench-{stamp}"
    sys.path.insert(0, str(REPO))
    from tests import servers

    scratch = tempfile.mkdtemp(prefix="moot-bench-")
    run: dict[str, Any] = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "params": vars(params), "raw": {}, "results": {},
    }
    passes: list[dict[str, Any]] = []  # each pass's results, merged into run["results"]
    try:
        wanted = [k for k in kinds if k in SERVER_KINDS]
        urls: dict[str, str] = {}
        if wanted:
            progress.say(f"starting {', '.join(wanted)} on loopback, production settings (tests/servers.py)")
            urls.update(servers.start_production(wanted))
            progress.say("servers answering")
        urls["memory"] = "memory://bench"
        urls["file"] = f"file://{scratch}/moot"
        run["environment"] = environment.describe(urls)
        progress.say(f"{len(steps) * args.runs} steps; load average {run['environment']['machine']['load_at_start']}")

        def save() -> None:  # after every step: partial results survive a stop
            run["results"] = report.merge_passes(passes)
            run["durations"] = progress.durations
            base.with_suffix(".json").write_text(json.dumps(run, indent=1))

        for number in range(args.runs):
            if args.runs > 1:
                progress.say(f"pass {number + 1} of {args.runs}")
            passes.append({})
            run["passes"] = len(passes)
            _run_pass(steps, urls, params, progress, run["raw"], passes[-1], save)
    finally:
        servers.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    run["seconds"] = time.monotonic() - progress.started
    run["durations"] = progress.durations
    run["load_at_end"] = environment.load()
    json_path, md_path, plots = write_outputs(run, base)
    sys.stdout.write(md_path.read_text())
    progress.say(progress.summary())
    progress.say(f"wrote {', '.join(str(path) for path in (json_path, md_path, *plots))}")
    return 0
