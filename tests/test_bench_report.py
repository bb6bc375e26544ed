"""The bench's report: rates with their spread, and when a rate below tooz's counts as met."""

from __future__ import annotations

from bench import report
from bench.workloads import window_rates


def test_window_rates_count_each_event_in_its_window_only() -> None:
    assert window_rates([0.1, 0.2, 1.5, 2.9, 3.0, -0.1], 0.0, 3.0) == [2.0, 1.0, 1.0]
    assert window_rates([], 0.0, 0.0) == []


def test_a_lower_rate_is_met_only_when_the_spreads_overlap() -> None:
    def rate(value: float, low: float, high: float) -> dict[str, object]:
        return {"per_second": value, "per_second_windows": [low, value, high]}

    assert report._at_least(rate(100, 90, 110), rate(95, 80, 120)) == (True, "1.1x better")
    assert report._at_least(rate(95, 90, 100), rate(100, 98, 110)) == (True, "1.1x worse, within spread")
    assert report._at_least(rate(80, 75, 85), rate(100, 95, 110)) == (False, "1.2x worse")
    assert report._at_least(None, rate(100, 95, 110)) == (False, "-")
    assert report._rate_cell(rate(2185, 2100, 2250)) == "2,185 (2,100-2,250)"


def test_passes_merge_into_each_steps_median_run_with_every_runs_headline() -> None:
    def step(rate: float) -> dict[str, object]:
        return {"per_second": rate, "per_second_windows": [rate - 1, rate + 1]}

    passes = [{"file": {"uncontended": {"moot": step(30), "tooz": step(50)}, "scaling": {"moot": {"n": 1}}}},
              {"file": {"uncontended": {"moot": step(10), "tooz": {"error": "boom"}}, "scaling": {"moot": {"n": 2}}}},
              {"file": {"uncontended": {"moot": step(20), "tooz": step(40)}}}]
    merged = report.merge_passes(passes)["file"]
    assert merged["uncontended"]["moot"]["per_second"] == 20
    assert merged["uncontended"]["moot"]["runs"] == {"per_second": [30, 10, 20]}
    assert merged["uncontended"]["tooz"]["per_second"] == 40  # the lower median of the two that measured
    assert merged["uncontended"]["tooz"]["runs"] == {"per_second": [50, 40]}
    assert merged["scaling"]["moot"] == {"n": 2}  # no headline: the last pass's
    # the spread is now the runs', not one run's windows
    assert report._rate_cell(merged["uncontended"]["moot"]) == "20.0 (10.0-30.0)"
    assert report._at_least(merged["uncontended"]["moot"], merged["uncontended"]["tooz"]) == (False, "2.0x worse")
    assert report.merge_passes(passes[:1]) == passes[0]  # one pass: as it was


def test_members_above_the_target_are_met_only_when_the_runs_overlap() -> None:
    def members(p50: float, *runs: float) -> dict[str, object]:
        return {"members": 1000, "p50_ms": p50, "runs": {"p50_ms": list(runs)}}

    def row(moot: dict[str, object]) -> list[str]:
        run = {"passes": 3, "results": {"zookeeper": {"members": {"tooz": members(1.0, 0.9, 1.0, 1.2)}},
                                        "postgresql": {"members": {"moot": moot}}}}
        (found,) = [r for r in report.targets(run).rows if r[1] == "postgresql"]
        return found

    assert row(members(2.0, 1.9, 2.0, 2.1))[-1] == "yes"
    assert row(members(2.3, 2.2, 2.3, 2.9))[-1] == "yes"  # 2.2 <= 2 x 1.2: within the runs' noise
    assert row(members(2.3, 2.2, 2.3, 2.9))[4].endswith("within spread")
    assert row(members(2.6, 2.5, 2.6, 2.9))[-1] == "**no**"
    assert row(members(2.0, 1.9, 2.0, 2.1))[2] == "2.00 ms (1.90-2.10)"
