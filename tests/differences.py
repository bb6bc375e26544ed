"""Where a backend cannot give a guarantee the suites check: expected,
documented differences, by test name.

Each entry names one test (its node id without the ``[backend]``
parameter) and says why it fails on that backend; ``docs/backends.md``
says the same to operators. ``tests/conftest.py`` marks exactly those test
cases ``xfail(strict=True)``: such a test must fail there (if it starts to
pass, the run fails and the entry must go), and every other test runs
unchanged. Nothing here is skipped.
"""

from __future__ import annotations

#: backend kind -> {test node id without parameters: reason}
EXPECTED: dict[str, dict[str, str]] = {}
