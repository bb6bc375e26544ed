"""The file:// on-disk formats never share a directory: a moot of format 1
(each ephemeral key a hard link to a flocked file of its own, sessions in
``.sessions/``) and one of format 2 (every key of a session lives by the
session file's flock, sessions in ``.sessions.2/``) would each take the
other's keys for dead. Played with the real format 1 code, taken from the
repository at the last commit that had it, in processes of its own.
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
#: The last commit whose file:// backend wrote format 1.
FORMAT_1 = "d4c6e80"

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


@pytest.fixture(scope="module")
def format_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ``moot`` package as it was at FORMAT_1."""
    where = tmp_path_factory.mktemp("format-1")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", FORMAT_1, "moot"], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    assert (where / "moot" / "backends" / "file" / "spares.py").exists()  # really format 1
    return where


@pytest.fixture
def old(format_1: Path, tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[str]]]]:
    procs: list[subprocess.Popen[str]] = []
    yield format_1, procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(BOUND)
        if proc.stdout is not None:
            proc.stdout.close()


def _start_old(format_1: Path, root: Path, procs: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], str]:
    """A format 1 process on ``root``; it and its first line (its lock key, or why it refused)."""
    proc = subprocess.Popen([sys.executable, "-c", _OLD, f"file://{root}"], cwd=format_1, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(format_1)})
    procs.append(proc)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _new(root: Path) -> FileBackend:
    backend = FileBackend(parse_url(f"file://{root}"), {})
    backend.connect(5)
    return backend


def test_a_live_format_1_process_is_named_and_its_directory_refused(
        old: tuple[Path, list[subprocess.Popen[str]]], tmp_path: Path) -> None:
    format_1, procs = old
    root = tmp_path / "coord"
    proc, key = _start_old(format_1, root, procs)
    assert key.startswith("ns/lock/x/q/"), key
    with pytest.raises(ConfigurationError, match=f"before format 2 uses it .*pid {proc.pid}"):
        _new(root)
    assert (root / ".sessions").is_dir()  # left as it was: the old process keeps working
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(BOUND)
    # Its owner dead, the directory becomes format 2; the old keys are dead entries.
    backend = _new(root)
    try:
        backend.open_session(2)
        mine, queue = backend.enqueue("ns/lock/x/q/", b"new")
        assert queue == [mine] and mine.seq is not None and mine.seq > int(key.rsplit("/", 1)[1])
        assert (root / ".sessions").is_file() and (root / ".sessions.2").is_dir()
        queue_dir = root / "ns.d" / "lock.d" / "x.d" / "q.d"
        names = sorted(p.name for p in queue_dir.iterdir())  # format 1's spare swept, this session's own left
        assert [n for n in names if not n.startswith(".f-")] == [".lock", mine.key.rsplit("/", 1)[1]], names
    finally:
        backend.close()


def test_a_format_1_process_refuses_a_format_2_directory(
        old: tuple[Path, list[subprocess.Popen[str]]], tmp_path: Path) -> None:
    format_1, procs = old
    root = tmp_path / "coord"
    with moot.connect(f"file://{root}", member_id="new", ttl=2) as coord, coord.lock("x", timeout=5):
        proc, line = _start_old(format_1, root, procs)
        assert line.startswith("refused ConfigurationError") and ".sessions" in line, line
        proc.wait(BOUND)
