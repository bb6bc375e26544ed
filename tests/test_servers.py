"""The test servers' own housekeeping (tests/servers.py), which two test
processes (``make test``) run at the same time."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests import servers


def test_the_sweep_keeps_a_directory_whose_pids_are_being_written_and_removes_a_dead_ones() -> None:
    made = Path(tempfile.mkdtemp(prefix=f"{servers._DIR_PREFIX}sweep-test-"))
    try:
        (made / "pids").write_text("")  # what another process reads between the file's truncation and its write
        servers._sweep_stale_dirs()
        assert made.exists(), "the sweep removed a directory whose owner was still writing its pids"
        finished = subprocess.Popen(["true"])
        finished.wait()
        servers._write_pids(made, finished.pid)
        servers._sweep_stale_dirs()
        assert not made.exists(), "the sweep kept a directory whose every process is gone"
    finally:
        shutil.rmtree(made, ignore_errors=True)
