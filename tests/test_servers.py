"""The test servers' own housekeeping (tests/servers.py), which two test
processes (``make test``) run at the same time."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

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


def test_each_test_process_draws_ports_from_a_slice_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    slices = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        slices.append(servers._port_range())
    (low0, high0), (low1, high1) = slices
    assert servers._PORT_RANGE[0] <= low0 < high0 <= low1 < high1 <= servers._PORT_RANGE[1]
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert servers._port_range() == servers._PORT_RANGE  # one process (or the command line): the whole range
