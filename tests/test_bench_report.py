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
