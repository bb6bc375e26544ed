"""The documentation, as a new user meets it.

- The site builds as `make docs` builds it (``scripts/build-docs.sh``:
  ``mkdocs build --strict``, the API reference generated from the
  docstrings), with no warning.
- A warning fails that build: a copy of the docs with a broken link and a
  page left out of the nav is refused, naming both.
- Every example a page calls "Runnable as is" runs as written, in a fresh
  directory with no ``$MOOT_URL``; when the page shows its "Output:", the
  example prints exactly that.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import BOUND

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD = ROOT / "scripts" / "build-docs.sh"
#: A whole build, installing docs/requirements.txt first if needed.
BUILD_BOUND = 600

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(BUILD), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=BUILD_BOUND, check=False)


def test_the_site_builds_with_no_warning(tmp_path: Path) -> None:
    run = _build("--site-dir", str(tmp_path / "site"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    assert "WARNING" not in run.stderr, run.stderr[-6000:]
    for page in ("index.html", "groups/index.html", "elections/index.html", "concurrency/index.html",
                 "reference/moot/index.html", "reference/aio/index.html", "reference/recipes/index.html",
                 "reference/errors/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    reference = (tmp_path / "site" / "reference" / "recipes" / "index.html").read_text()
    assert "campaign" in reference and "members" in reference  # generated from the docstrings
    assert ":class:" not in reference  # Sphinx roles rendered as code, not printed as is


def test_a_warning_fails_the_build(tmp_path: Path) -> None:
    """The same configuration on a copy of the docs with two mistakes."""
    project = tmp_path / "project"
    shutil.copytree(DOCS, project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    (project / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "griffe_sphinx_roles.py", project / "scripts")
    (project / "moot").symlink_to(ROOT / "moot", target_is_directory=True)
    with (project / "docs" / "groups.md").open("a") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    (project / "docs" / "orphan.md").write_text("# Not in the nav\n")
    run = _build("--config-file", str(project / "mkdocs.yml"), "--site-dir", str(tmp_path / "site"))
    said = run.stdout + run.stderr
    assert run.returncode != 0, said[-3000:]
    assert "no-such-page.md" in said and "orphan.md" in said, said[-3000:]
    assert "Aborted with 2 warnings in strict mode" in said, said[-3000:]


def _runnable_examples() -> list[tuple[str, str, str | None]]:
    """``(where, code, output)`` for each python block introduced by a
    paragraph that starts "Runnable as is", with the block shown after it
    if that one is introduced by "Output:"."""
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text()
        fences = list(_FENCE.finditer(text))
        for i, fence in enumerate(fences):
            before = text[fences[i - 1].end() if i else 0:fence.start()]
            paragraph = before.strip().split("\n\n")[-1]
            if fence.group(1) != "python" or not paragraph.startswith("Runnable as is"):
                continue
            output = None
            if i + 1 < len(fences):
                between = text[fence.end():fences[i + 1].start()].strip()
                if between == "Output:":
                    output = fences[i + 1].group(2)
            line = text.count("\n", 0, fence.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", fence.group(2), output))
    return found


EXAMPLES = _runnable_examples()


def test_the_new_pages_have_runnable_examples() -> None:
    pages = {where.split(":")[0] for where, _, _ in EXAMPLES}
    assert {"docs/groups.md", "docs/elections.md", "docs/concurrency.md"} <= pages, pages


@pytest.mark.parametrize(("where", "code", "output"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_runnable_example(where: str, code: str, output: str | None, tmp_path: Path) -> None:
    if "import eventlet" in code:
        pytest.importorskip("eventlet")
    script = tmp_path / "example.py"
    script.write_text(code)
    # What a terminal shows: both streams, in order (logging writes to
    # stderr), without Python's warnings (eventlet's deprecation notice on
    # import, which the page mentions).
    env = {k: v for k, v in os.environ.items() if k != "MOOT_URL"}
    env.update(PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=BOUND * 3, check=False)
    assert run.returncode == 0, f"{where} failed:\n{run.stdout[-6000:]}"
    if output is not None:
        assert run.stdout == output, f"{where} printed:\n{run.stdout}\nthe page shows:\n{output}"
