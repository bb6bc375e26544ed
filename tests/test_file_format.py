"""The file:// on-disk formats never share a directory: format 1 made each
ephemeral key a hard link to a flocked file of its own (sessions in
``.sessions/``), format 2 lets every key of a session live by the session
file's flock (sessions in ``.sessions.2/``), and format 3 adds a directory's
slot (an uncontended queue's entry kept in its ``.lock``, sessions in
``.sessions.3/``). An older process would take newer keys for dead, or not
see a slot's entry at all. Played with the real code of each older format,
taken from the repository at the last commit that wrote it, in processes of
its own.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import moot
from moot.backends.file import FileBackend
from moot.errors import ConfigurationError
from moot.url import parse_url
from tests.waiting import BOUND

REPO = Path(__file__).resolve().parents[1]
#: The last commit whose file:// backend wrote each older format, and the
#: sessions directory that format kept.
OLDER = {1: ("d4c6e80", ".sessions"), 2: ("c900905", ".sessions.2")}

_OLD = """
import sys, time
from moot.backends.file import FileBackend
from moot.url import parse_url
backend = FileBackend(parse_url(sys.argv[1]), {})
try:
    backend.connect(5)
except Exception as exc:
    print(f"refused {type(exc).__name__}: {exc}", flush=True)
    sys.exit(0)
backend.open_session(2)
entry = backend.create_sequential("ns/lock/x/q/", b"old")
print(entry.key, flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module", params=sorted(OLDER), ids=lambda number: f"format-{number}")
def older(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """An older format's number and a copy of the ``moot`` package that wrote it."""
    number: int = request.param
    commit, sessions = OLDER[number]
    where = tmp_path_factory.mktemp(f"format-{number}")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "moot"], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    code = where / "moot" / "backends" / "file"
    assert any(f'"{sessions}"' in module.read_text() for module in code.glob("*.py"))
    assert not (code / "slot.py").exists()
    return number, where


@pytest.fixture
def old(older: tuple[int, Path]) -> Iterator[tuple[int, Path, list[subprocess.Popen[str]]]]:
    procs: list[subprocess.Popen[str]] = []
    yield *older, procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(BOUND)
        if proc.stdout is not None:
            proc.stdout.close()


def _start_old(package: Path, root: Path, procs: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], str]:
    """An older format's process on ``root``; it and its first line (its lock key, or why it refused)."""
    proc = subprocess.Popen([sys.executable, "-c", _OLD, f"file://{root}"], cwd=package, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(package)})
    procs.append(proc)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _new(root: Path) -> FileBackend:
    backend = FileBackend(parse_url(f"file://{root}"), {})
    backend.connect(5)
    return backend


def test_a_live_older_process_is_named_and_its_directory_refused(
        old: tuple[int, Path, list[subprocess.Popen[str]]], tmp_path: Path) -> None:
    number, package, procs = old
    sessions = OLDER[number][1]
    root = tmp_path / "coord"
    proc, key = _start_old(package, root, procs)
    assert key.startswith("ns/lock/x/q/"), key
    with pytest.raises(ConfigurationError, match=f"before format {number + 1} uses it .*pid {proc.pid}"):
        _new(root)
    assert (root / sessions).is_dir()  # left as it was: the old process keeps working
    queue_dir = root / "ns.d" / "lock.d" / "x.d" / "q.d"
    assert key.rsplit("/", 1)[1] in os.listdir(queue_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(BOUND)
    # Its owner dead, the directory becomes format 3; the old keys are dead entries.
    backend = _new(root)
    try:
        backend.open_session(2)
        mine, queue = backend.enqueue("ns/lock/x/q/", b"new")
        assert queue == [mine] and mine.seq is not None and mine.seq > int(key.rsplit("/", 1)[1])
        for older in (".sessions", ".sessions.2"):
            assert (root / older).is_file(), older
        assert (root / ".sessions.3").is_dir()
        names = sorted(p.name for p in queue_dir.iterdir())  # the old key and spare swept; mine is in the slot
        assert names == [".lock"], names
        assert backend.get(mine.key) == mine
    finally:
        backend.close()


def test_an_older_process_refuses_a_format_3_directory(
        old: tuple[int, Path, list[subprocess.Popen[str]]], tmp_path: Path) -> None:
    number, package, procs = old
    root = tmp_path / "coord"
    with moot.connect(f"file://{root}", member_id="new", ttl=2) as coord, coord.lock("x", timeout=5):
        proc, line = _start_old(package, root, procs)
        assert line.startswith("refused ConfigurationError") and OLDER[number][1] in line, line
        proc.wait(BOUND)
