"""Several OS processes on one backend: crashes free locks and memberships,
and a lock never admits two processes at once. (memory:// is one process
only, so it is not part of these.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_TTL, Connect
from tests.waiting import BOUND, wait_until

REPO = Path(__file__).resolve().parents[2]


def _worker(url: str, namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.conformance.worker", url, namespace, *args],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)


pytestmark = pytest.mark.multiprocess


def test_sigkilled_holder_frees_its_lock_and_membership(connect: Connect, url: str, namespace: str) -> None:
    coord = connect("survivor")
    proc = _worker(url, namespace, "hold", "shared", "workers")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("held "), line
        token = int(line.split()[1])
        member = f"worker-{proc.pid}"
        assert coord.group("workers").is_up(member)
        info = coord.lock_info("shared")
        assert info is not None and info.holder == member
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        lock = coord.lock("shared")
        # Freed within the session TTL (at once on file://); the bound only guards the test.
        assert lock.acquire(timeout=TEST_TTL * 5)
        assert lock.token is not None and lock.token > token
        wait_until(lambda: not coord.group("workers").is_up(member), timeout=TEST_TTL * 5,
                   what="killed member gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_processes_looping_on_one_lock_never_overlap(url: str, namespace: str, tmp_path: Path) -> None:
    logfile = tmp_path / "log"
    logfile.touch()
    procs = [_worker(url, namespace, "loop", "counter", "30", str(logfile)) for _ in range(3)]
    for proc in procs:
        assert proc.wait(BOUND * 3) == 0
    lines = logfile.read_text().split("\n")[:-1]
    assert len(lines) == 3 * 30 * 2
    tokens = []
    for begin, end in zip(lines[::2], lines[1::2], strict=True):
        kind_b, pid_b, token_b = begin.split()
        kind_e, pid_e, token_e = end.split()
        assert (kind_b, kind_e) == ("B", "E") and (pid_b, token_b) == (pid_e, token_e), (begin, end)
        tokens.append(int(token_b))
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
