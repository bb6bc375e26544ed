"""The fault suite's seed and its summary at the end of the run."""

from __future__ import annotations

import os
import random

import pytest

#: One seed per run (``MOOT_FAULT_SEED`` replays a run's fault schedule).
SEED = int(os.environ.get("MOOT_FAULT_SEED") or random.SystemRandom().randrange(1, 1_000_000))
#: (test id, summary line, seconds) of every scenario that ran.
RESULTS: list[tuple[str, str, float]] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section(f"fault suite (MOOT_FAULT_SEED={SEED})")
    for test_id, line, seconds in RESULTS:
        terminalreporter.write_line(f"{test_id} [{seconds:.0f}s]: {line}")
    terminalreporter.write_line(f"fault scenarios: {sum(r[2] for r in RESULTS):.0f} s in all")
