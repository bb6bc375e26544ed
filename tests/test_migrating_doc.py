"""docs/migrating.md's shell commands, run as written on every backend with
a server (and file://), with ``URL`` set as the page says.

The page's ``moot ... members GROUP`` names a placeholder: the test fills it
with a group that a member of this test has joined.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import moot

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"
_SHELL = re.compile(r"```sh\n(.*?)```", re.S)
#: A bound on one block (a connect, a lock or a group, a close).
BLOCK_TIMEOUT = 60

#: What each block that uses $URL must print (fragments, in order; {group}
#: is the group the test joined).
EXPECTED = {
    "coordination.get_coordinator": ["lock held, fencing token ", "ok"],
    "moot.ServiceGroup": ["up: True", "after stop: []"],
    'moot --url "$URL" locks': ["{group}  ", "GROUP-MEMBER  up"],  # groups, then members GROUP
}


def _blocks() -> list[str]:
    return [block for block in _SHELL.findall(DOC.read_text()) if "$URL" in block]


def test_the_page_has_the_blocks_this_test_checks() -> None:
    blocks = _blocks()
    assert len(blocks) == len(EXPECTED), blocks
    for marker in EXPECTED:
        assert sum(marker in block for block in blocks) == 1, marker


@pytest.mark.multiprocess
@pytest.mark.parametrize("marker", list(EXPECTED))
def test_migration_commands_run_as_written(marker: str, url: str) -> None:
    (block,) = [block for block in _blocks() if marker in block]
    group = f"migration-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "URL": url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with moot.connect(url, member_id="GROUP-MEMBER") as member:
        member.group(group).join()
        run = subprocess.run(["bash", "-e", "-c", block.replace("GROUP", group)], env=env, capture_output=True,
                             text=True, timeout=BLOCK_TIMEOUT, check=False)
    assert run.returncode == 0, f"{block}\nfailed:\n{run.stdout}\n{run.stderr}"
    at = 0
    for fragment in (f.format(group=group) for f in EXPECTED[marker]):
        found = run.stdout.find(fragment, at)
        assert found >= 0, f"{fragment!r} missing after offset {at} in:\n{run.stdout}"
        at = found + len(fragment)
