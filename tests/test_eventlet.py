"""Under ``eventlet.monkey_patch()`` every backend works and the heartbeat
stays a real OS thread: the lock and group conformance cases run unchanged
in a monkey-patched process, against the servers of this run, through the
blocking API (an eventlet program is not an asyncio one; moot.aio's runs of
the same cases need real threads, and run in the main suite)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import KINDS
from tests.servers import REPO


@pytest.mark.timeout(600)
def test_lock_and_group_conformance_in_a_monkey_patched_process(server_urls: dict[str, str]) -> None:
    urls = ",".join(server_urls[kind] for kind in KINDS if kind in server_urls)
    env = {**os.environ, "MOOT_TEST_URLS": urls}
    run = subprocess.run(
        [sys.executable, "-m", "tests.eventlet_pytest", "-q", "-x", "-p", "no:cacheprovider", "--timeout", "60",
         "-k", "not async",
         "tests/conformance/test_lock.py", "tests/conformance/test_group.py",
         "tests/test_eventlet_threads.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540, check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-20000:]  # a hang's stacks are on stderr
    assert " passed" in run.stdout and " failed" not in run.stdout
