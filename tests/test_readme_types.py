"""The README's quick start type-checks under ``mypy --strict``: where a
fencing token is certainly set (inside ``with coord.lock(...) as held:``,
after a successful ``campaign()``) it is an ``int``, not ``int | None``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What the quick start calls but leaves to the reader.
PREAMBLE = """\
def write_with(token: int) -> None: ...
def schedule_with(token: int) -> None: ...
"""


def mypy_strict(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict path`` against this checkout's moot (mypy does not see an
    editable install), with moot's own settings for the clients it imports."""
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(cache), str(path)],
                          cwd=path.parent, env={**os.environ, "MYPYPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300, check=False)


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the README's quick start has no python block"
    return found.group(1)


def test_the_quick_start_type_checks_strictly(tmp_path: Path) -> None:
    code = quick_start()
    assert "held.token" in code and "leadership.token" in code
    example = tmp_path / "quick_start.py"
    example.write_text(PREAMBLE + code)
    done = mypy_strict(example, tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_token_that_may_be_unset_is_still_refused(tmp_path: Path) -> None:
    """The check can fail: the lock object's own ``token`` stays ``int | None``."""
    example = tmp_path / "unset.py"
    example.write_text(PREAMBLE + "import moot\nlock = moot.connect('memory://').lock('x')\n"
                       "write_with(lock.token)\n")
    done = mypy_strict(example, tmp_path / "cache")
    assert done.returncode == 1 and "int | None" in done.stdout, done.stdout
