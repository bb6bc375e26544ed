"""The handoff plot: one column per backend, moot against tooz, as CDFs on a
log time axis. Top: release -> next process's acquire (handoffs). Bottom:
each acquire's wait (ask -> acquired; a process that never got the lock
counts its whole wait), which shows starvation that handoffs cannot."""

from __future__ import annotations

from typing import Any

from bench.report import KINDS, scaling_results, scaling_value

COLORS = {"moot": "#1f77b4", "tooz": "#d62728", "tooz-on-moot": "#2ca02c"}
ROWS = (("handoffs", "handoff_p99_ms", "handoff (ms, log)"), ("waits", "longest_wait_ms", "wait (ms, log)"))


def handoff_cdf(run: dict[str, Any], path: str) -> bool:
    """Write the PNG to ``path``; False if the run has no contended results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = run.get("results", {})
    kinds = [k for k in KINDS if any(r.get("handoffs") for r in results.get(k, {}).get("contended", {}).values())]
    if not kinds:
        return False
    fig, axes = plt.subplots(2, len(kinds), figsize=(2.7 * len(kinds) + 0.6, 5.4), sharey=True, squeeze=False)
    for column, kind in enumerate(kinds):
        for row, (field, summary, label) in enumerate(ROWS):
            ax = axes[row][column]
            for system, result in sorted(results[kind]["contended"].items()):
                values = sorted(max(v, 1e-3) for v in result.get(field) or [])
                if not values:
                    continue
                n = len(values)
                worst = "p99" if field == "handoffs" else "max"
                ax.step(values, [(i + 1) / n for i in range(n)], where="post", color=COLORS.get(system),
                        label=f"{system} ({worst} {result[summary]:.1f} ms, n={n})", linewidth=1.4)
            ax.set_xscale("log")
            ax.set_xlim(0.05, 10000)
            ax.axvline(10 if field == "handoffs" else 50, color="grey", linestyle=":", linewidth=0.8)
            if row == 0:
                ax.set_title(kind, fontsize=10)
            ax.set_xlabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", linewidth=0.3)
            ax.legend(fontsize=6.5, loc="lower right")
    axes[0][0].set_ylabel("fraction of handoffs <= x", fontsize=8)
    axes[1][0].set_ylabel("fraction of acquires <= x", fontsize=8)
    fig.suptitle("4 processes on one lock, hold 1 ms\nTop: release -> another process acquires "
                 "(dotted: 10 ms). Bottom: wait per acquire (dotted: 50 ms)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


#: The scaling plot's panels: (series in the results, size key, y label, the value of one cell).
_SCALING = (
    ("handoff_requests", "handoff", "requests per handoff", lambda v: v["requests"] if isinstance(v, dict) else v),
    ("heartbeat_ms", "heartbeat", "one heartbeat (ms)", lambda v: v),
    ("members", "members", "member_ids() (ms)", lambda v: v["member_ids_ms"]),
    ("threads_per_second", "threads", "acquire+release /s", lambda v: v),
    ("waiting", "waiting", "file descriptors", lambda v: v["fds"]),
)
_X_LABELS = {"handoff": "waiters queued", "heartbeat": "locks held", "members": "members",
             "threads": "threads, each on its own lock", "waiting": "locks waited for (one process)"}


def scaling(run: dict[str, Any], path: str) -> bool:
    """Write moot's cost as the work grows (the scaling table), one panel
    per series and one line per backend on log axes, to ``path``; False if
    the run has no scaling results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = scaling_results(run)
    if not results:
        return False
    fig, axes = plt.subplots(1, len(_SCALING), figsize=(3.3 * len(_SCALING), 3.6), squeeze=False)
    for ax, (series, size_key, label, value_of) in zip(axes[0], _SCALING, strict=True):
        for kind, result in results.items():
            points = []
            for n in result["sizes"][size_key]:
                cell = scaling_value(result, series, n)
                if cell is not None:
                    points.append((n, value_of(cell)))
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, linewidth=1.2, label=kind,
                        color=f"C{KINDS.index(kind)}")  # one colour per backend in every panel
        ax.set_xscale("log")
        if series not in ("handoff_requests", "waiting"):  # counts that must stay flat read best on a linear axis
            ax.set_yscale("log")
        ax.set_xlabel(_X_LABELS[size_key], fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", linewidth=0.3)
    handles = {label: line for ax in axes[0] for line, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    kinds = sorted(handles, key=KINDS.index)
    fig.legend([handles[kind] for kind in kinds], kinds, loc="lower center", ncol=len(kinds), fontsize=8)
    fig.suptitle("moot's cost as the work grows (flat is the goal for requests per handoff, heartbeat and "
                 "descriptors)", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
