"""`make audit` (scripts/audit-deps.py): what it audits, what fails the run
and what only reports. pip-audit's answers are played by a stand-in that
reads the requirements it is given: the advisory database cannot be reached
from the test machine, and what is under test is the decision, not pip-audit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: A pip-audit stand-in: reports $VULNERABLE (a package name) as vulnerable
#: when it is in the requirements, skips everything when $UNREACHABLE is
#: "skip", and fails without a report when it is "crash".
_STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
requirements = open(args[args.index("--requirement") + 1]).read().split()
with open(os.environ["SEEN"], "a") as seen:
    seen.write(" ".join(requirements) + "\\n")
if os.environ.get("UNREACHABLE") == "crash":
    sys.exit("requests.exceptions.ConnectionError: Failed to resolve the advisory host")
deps = []
for line in requirements:
    name, version = line.split("==")
    if os.environ.get("UNREACHABLE") == "skip":
        deps.append({{"name": name, "skip_reason": "Dependency not found on PyPI and could not be audited"}})
    else:
        vulns = [{{"id": "PYSEC-0000-1", "fix_versions": ["99.0"]}}] if name == os.environ.get("VULNERABLE") else []
        deps.append({{"name": name, "version": version, "vulns": vulns}})
json.dump({{"dependencies": deps, "fixes": []}}, open(args[args.index("--output") + 1], "w"))
sys.exit(1 if any(d.get("vulns") for d in deps) else 0)
"""


def _audit(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    stand_in = tmp_path / "pip-audit"
    stand_in.write_text(_STAND_IN.format(python=sys.executable))
    stand_in.chmod(0o755)
    seen = tmp_path / "seen"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "audit-deps.py"), str(stand_in)],
                            env={**os.environ, "SEEN": str(seen), **env}, capture_output=True, text=True,
                            timeout=120, check=False)
    return result, seen.read_text().splitlines() if seen.exists() else []


def test_the_runtime_set_and_the_dev_set_are_audited_apart(tmp_path: Path) -> None:
    result, seen = _audit(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    runtime, dev = (set(line.split()) for line in seen)
    runtime_names = {pin.split("==")[0] for pin in runtime}
    dev_names = {pin.split("==")[0] for pin in dev}
    assert {"kazoo", "psycopg", "pymysql", "prometheus-client", "oslo-config", "tooz"} <= runtime_names
    assert {"pytest", "mypy", "ruff", "hypothesis"} <= dev_names and not runtime_names & dev_names
    assert all("==" in pin for pin in runtime | dev)  # pinned to what is installed
    assert "moot" not in runtime_names | dev_names


@pytest.mark.parametrize("package", ["kazoo", "psycopg"])
def test_a_vulnerable_runtime_dependency_fails(tmp_path: Path, package: str) -> None:
    result, _ = _audit(tmp_path, VULNERABLE=package)
    assert result.returncode == 1
    assert f"VULNERABLE {package} " in result.stdout and "PYSEC-0000-1 (fixed in 99.0)" in result.stdout
    assert "audit: FAILED: a runtime dependency" in result.stdout


def test_a_vulnerable_dev_dependency_is_reported_without_failing(tmp_path: Path) -> None:
    result, _ = _audit(tmp_path, VULNERABLE="pytest")
    assert result.returncode == 0
    assert "VULNERABLE pytest " in result.stdout and "dev/test: vulnerable packages above" in result.stdout


@pytest.mark.parametrize("how", ["crash", "skip"])
def test_an_unreachable_database_reports_without_blocking(tmp_path: Path, how: str) -> None:
    result, _ = _audit(tmp_path, UNREACHABLE=how, VULNERABLE="kazoo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("WARNING") == 2 and "not blocking" in result.stdout
