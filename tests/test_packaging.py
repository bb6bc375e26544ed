"""moot as another project gets it: the sdist built from the source, the
wheel built from that sdist, installed into a fresh venv with no index, and
used from a directory outside the checkout; the metadata a package index
shows (SPDX license, the LICENSE file, a long description with no link
that only works inside the repository) and extras that name what exists.

Builds with the running interpreter's setuptools (``--no-build-isolation``:
no network); the fresh venv needs none either, moot having no dependencies.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
STEP = 120.0  # bound on one build or install step (a busy machine); the whole test takes ~15 s

SMOKE = """
import sys, moot
print(moot.__file__)
with moot.connect(sys.argv[1], member_id="smoke") as coord:
    with coord.lock("packaging") as held:
        assert held.token > 0 and coord.lock_info("packaging").holder == "smoke"
    assert coord.lock_info("packaging") is None
    group = coord.group("installed")
    group.join()
    assert set(group.members()) == {"smoke"}
print("OK")
"""


def run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(arg) for arg in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=STEP)
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def clean_env() -> dict[str, str]:
    """The environment without anything that would put the checkout on sys.path."""
    return {key: value for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel): the sdist built from a copy of the sources, the wheel from the unpacked sdist."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"  # a copy: the build leaves nothing (build/, egg-info) in the checkout
    shutil.copytree(ROOT / "moot", source / "moot", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp / "dist"
    dist.mkdir()
    output = run([sys.executable, "-c", "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))",
                  dist], cwd=source)
    assert "SetuptoolsDeprecationWarning" not in output, output  # e.g. the license-table banner
    (sdist,) = dist.glob("moot-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    output = run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                  "--quiet", "-w", dist, unpacked], cwd=tmp)
    assert "Deprecat" not in output, output
    (wheel,) = dist.glob("moot-*.whl")
    return sdist, wheel


def test_sdist_holds_what_a_build_needs(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO", "moot/__init__.py", "moot/py.typed"} <= names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)


def test_wheel_metadata_is_what_an_index_shows(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(meta).decode())
        (license_file,) = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
        license_text = archive.read(license_file).decode()
    assert metadata["License-Expression"] == PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert (ROOT / "LICENSE").read_text() == license_text
    assert not [c for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]  # the SPDX field says it
    assert metadata.get_all("Project-URL") and metadata["Keywords"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "moot/py.typed" in names and not any(name.startswith(("tests/", "bench/")) for name in names)
    description = metadata.get_payload()
    assert "## Install" in description
    # A link on an index page resolves against the index, not the repository: only absolute ones work.
    targets = re.findall(r"\]\(([^)\s]+)", description) + re.findall(r"(?:href|src)=[\"']([^\"']+)", description)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", description, flags=re.M)  # reference-style links
    relative = [t for t in targets if not re.match(r"(https?|mailto):", t) and not t.startswith("#")]
    assert relative == []
    assert set(metadata.get_all("Provides-Extra") or []) == set(PYPROJECT["project"]["optional-dependencies"])


def test_wheel_in_a_fresh_venv_works_outside_the_checkout(dists: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = dists
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    # this interpreter's pip installs into the new venv; no index: moot and the stdlib extras need nothing else
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index", "--find-links",
         wheel.parent, "moot[redis,etcd,memcached]"], cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    output = run([python, "-c", SMOKE, f"file://{tmp_path / 'coord'}"], cwd=elsewhere, env=clean_env())
    location, status = output.split()[:2]
    assert Path(location).resolve().is_relative_to(venv.resolve()), f"moot imported from {location}, not the venv"
    assert not Path(location).resolve().is_relative_to(ROOT)
    assert status == "OK"
    listed = run([venv / "bin" / "moot", "--url", f"file://{tmp_path / 'coord'}", "locks", "--json"],
                 cwd=elsewhere, env=clean_env())
    assert listed.strip() == "[]"


def test_extras_name_what_exists() -> None:
    """Each engine's extra has a backend package; every ``moot[...]`` the code
    and docs tell a user to install is an extra; ``all`` covers every engine."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    backends = {p.name for p in (ROOT / "moot" / "backends").iterdir() if (p / "__init__.py").exists()}
    backends |= {p.stem for p in (ROOT / "moot" / "backends").glob("*.py")} - {"__init__", "base"}
    engines = set(extras) - {"oslo", "metrics", "tooz", "all", "dev"}
    assert engines <= backends, engines - backends
    assert backends - engines == {"memory", "file", "_support"}  # built in: no client to install
    assert set(re.findall(r"moot\[([a-z,]+)\]", extras["all"][0])[0].split(",")) == engines | {"metrics"}
    named: set[str] = set()
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "moot").rglob("*.py")]:
        for found in re.findall(r"moot\[([a-z0-9_,{}]+)\]", path.read_text()):
            named.update(name for name in found.split(",") if not name.startswith("{"))
    assert named and named <= set(extras), named - set(extras)
