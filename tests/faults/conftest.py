"""The fault suite's seed and the results its end-of-run summary prints
(``tests/conftest.py``, which also draws the seed once per run)."""

from __future__ import annotations

import os

#: One seed per run (``MOOT_FAULT_SEED`` replays a run's fault schedule).
SEED = int(os.environ["MOOT_FAULT_SEED"])
#: (test id, summary line, seconds) of every scenario that ran.
RESULTS: list[tuple[str, str, float]] = []
