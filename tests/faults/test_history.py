"""The fault suite's checks catch what they claim to, on made-up histories."""

from __future__ import annotations

from typing import Any

from tests.faults.history import Fault, Membership, analyse
from tests.faults.register import Attempt


def acq(pid: int, token: int, t: float) -> dict[str, Any]:
    return {"ev": "acq", "pid": pid, "token": token, "t": t}


def rel(pid: int, token: int, t: float) -> dict[str, Any]:
    return {"ev": "rel", "pid": pid, "token": token, "t": t}


def lost(pid: int, token: int, t: float) -> dict[str, Any]:
    return {"ev": "lost", "pid": pid, "token": token, "t": t}


def write(pid: int, token: int, t: float, accepted: bool = True, highest: int = -1) -> Attempt:
    return Attempt(pid, token, t, t + 0.001, accepted, highest)


def kinds(violations: list[str]) -> list[str]:
    return sorted(v.split(":", 1)[0] for v in violations)


def test_a_clean_history_has_no_violation() -> None:
    events = [acq(1, 10, 0.0), rel(1, 10, 1.0), acq(2, 11, 1.1), lost(2, 11, 2.0), acq(1, 12, 2.5), rel(1, 12, 3)]
    attempts = [write(1, 10, 0.5), write(2, 11, 1.5, highest=10), write(1, 12, 2.6, highest=11)]
    report = analyse(events, attempts, [Fault("partition", 1.2, 2.6, pid=2)], [], 4.0)
    assert report.violations == []
    assert report.worst_margin is not None and abs(report.worst_margin - 0.5) < 1e-9


def test_two_live_holders_are_an_overlap() -> None:
    events = [acq(1, 10, 0.0), rel(1, 10, 2.0), acq(2, 11, 1.0), rel(2, 11, 3.0)]
    report = analyse(events, [], [], [], 4.0)
    assert "overlap" in kinds(report.violations) and "stale-holder" in kinds(report.violations)


def test_a_stopped_holder_ends_at_the_stop_but_may_not_read_true_after_resuming() -> None:
    events = [acq(1, 10, 0.0), acq(2, 11, 2.0), rel(1, 10, 3.1), rel(2, 11, 4.0)]
    stop = Fault("sigstop", 0.5, 3.0, pid=1)
    assert analyse(events, [], [stop], [], 5.0).violations == []  # it never acted after resuming
    report = analyse(events, [write(1, 10, 3.05, accepted=False, highest=11)], [stop], [], 5.0)
    assert kinds(report.violations) == ["stale-holder"]


def test_a_holder_told_after_the_next_acquisition_is_a_stale_holder() -> None:
    events = [acq(1, 10, 0.0), acq(2, 11, 2.0), lost(1, 10, 2.1), rel(1, 10, 2.1), rel(2, 11, 3.0)]
    report = analyse(events, [], [], [], 4.0)
    assert "stale-holder" in kinds(report.violations)
    assert report.worst_margin is not None and report.worst_margin < 0


def test_an_equal_token_from_another_process_is_a_stale_accept() -> None:
    attempts = [write(1, 10, 0.1), write(2, 10, 0.2, highest=10)]
    assert kinds(analyse([], attempts, [], [], 1.0).violations) == ["stale-accepted"]


def test_tokens_that_go_back_or_repeat_are_flagged() -> None:
    events = [acq(1, 25, 0.0), rel(1, 25, 1.0), acq(2, 1, 2.0), rel(2, 1, 3.0), acq(1, 1, 4.0), rel(1, 1, 5.0)]
    # 1 after 25 (twice), and 1 issued twice
    assert kinds(analyse(events, [], [], [], 6.0).violations) == ["token-order"] * 3


def test_a_killed_holder_ends_when_killed() -> None:
    events = [acq(1, 10, 0.0), acq(2, 11, 2.0), rel(2, 11, 3.0)]
    assert analyse(events, [], [Fault("sigkill", 0.5, 0.6, pid=1)], [], 4.0).violations == []


def test_members_not_back_in_time_are_flagged() -> None:
    late = Membership("engine_restart", 1.0, 4.5, 6.0, ["w-7"])
    never = Membership("partition", 1.0, 4.5, None, ["w-8"])
    report = analyse([], [], [], [late, never], 10.0)
    assert kinds(report.violations) == ["membership", "membership"]
    report.classify({"overlap"})
    assert report.violations == [] and len(report.excused) == 2
