"""Whom a file:// directory trusts (moot.backends.file.access): the
zero-config default directory is made 0700 and refused when another user
made it first or could write to it; an explicit directory is held to the same
rules; ``?mode=0660`` shares one on purpose through a group; the modes of what
moot creates are exactly the documented ones.

The tests run as root and play the other accounts with ``setpriv`` (real
uids, real permission checks): an attacker who prepares the victim's default
directory, a victim who then connects, two services sharing a group.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import moot
from moot.backends.file.access import default_directory, parse_mode
from moot.errors import ConfigurationError, InvalidURL

NOBODY = 65534  # the attacker: an account that exists everywhere
VICTIM = 61001  # accounts with no passwd entry: setpriv needs none, moot names them by number
SERVICE_A, SERVICE_B, SHARED_GID = 61002, 61003, 61000
BOUND = 60.0  # seconds a child process may take; exceeding it fails the test

#: Run by a child as another user: connect to the default (or given) URL,
#: take a lock, print what happened. Exit 3 on a ConfigurationError.
_CONNECT = """
import sys, moot
from moot.errors import ConfigurationError
try:
    with moot.connect(*sys.argv[1:2], timeout=10) as coordinator:
        coordinator.lock("job").acquire()
        print("LOCKED in", coordinator.backend.url.path)
except ConfigurationError as exc:
    print("REFUSED", type(exc).__name__, exc)
    sys.exit(3)
"""


def _as_user(uid: int, gid: int, args: list[str], env: dict[str, str], groups: tuple[int, ...] = (),
             **kwargs: object) -> list[str]:
    """The command running ``args`` as ``uid``/``gid`` with exactly ``groups``."""
    group_args = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", *group_args, *args]


def _child_env(tmpdir: str, user: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MOOT_URL", "XDG_RUNTIME_DIR")}
    env.update(TMPDIR=tmpdir, USER=user, LOGNAME=user, HOME=tmpdir, PYTHONDONTWRITEBYTECODE="1")
    return env


def _run_as(uid: int, gid: int, code: str, env: dict[str, str], *argv: str,
            groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_as_user(uid, gid, [sys.executable, "-c", code, *argv], env, groups), env=env,
                          cwd=env["TMPDIR"], capture_output=True, text=True, timeout=BOUND, check=False)


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A temporary directory like /tmp (mode 1777: sticky, writable by all)
    that other accounts can reach (pytest's tmp_path is root's, 0700)."""
    path = tempfile.mkdtemp(prefix="moot-sec-", dir="/tmp")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's zero-config directory lives in ``tmp_path``."""
    monkeypatch.delenv("MOOT_URL", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return Path(default_directory())


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the zero-config default, in this process (root) ----------------------------

def test_the_default_directory_is_made_0700_and_reused(runtime_dir: Path) -> None:
    old = os.umask(0)  # the mode does not depend on a lax umask
    try:
        with moot.connect() as coordinator:
            assert coordinator.lock("a").acquire(timeout=5)
    finally:
        os.umask(old)
    assert _mode(runtime_dir) == 0o700 and os.stat(runtime_dir).st_uid == os.geteuid()
    with moot.connect() as coordinator:  # existing, ours, 0700: used again
        assert coordinator.lock("a").acquire(timeout=5)


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o703])
def test_a_default_directory_writable_by_others_is_refused(runtime_dir: Path, mode: int) -> None:
    runtime_dir.mkdir()
    os.chmod(runtime_dir, mode)
    with pytest.raises(ConfigurationError) as caught:
        moot.connect()
    message = str(caught.value)
    assert "writable by every user" in message and f"{mode:04o}" in message
    assert f"chmod o-w {runtime_dir}" in message and f"rm -r {runtime_dir}" in message
    assert "$MOOT_URL" in message and "$XDG_RUNTIME_DIR" in message
    assert os.listdir(runtime_dir) == []  # nothing was made in it


def test_a_default_directory_writable_by_its_group_is_refused(runtime_dir: Path) -> None:
    runtime_dir.mkdir()
    os.chmod(runtime_dir, 0o770)
    with pytest.raises(ConfigurationError, match=r"writable by its group root \(gid 0\) \(mode 0770\).* chmod g-w .* "
                       r"set MOOT_URL='file://.*/moot-root\?mode=0660'"):
        moot.connect()


def test_a_default_directory_owned_by_another_user_is_refused(runtime_dir: Path) -> None:
    """Root could write in it anyway: the point is that its owner controls it."""
    runtime_dir.mkdir(mode=0o700)
    os.chown(runtime_dir, NOBODY, NOBODY)
    with pytest.raises(ConfigurationError, match=r"owned by nobody \(uid 65534\), not by root \(uid 0\)"):
        moot.connect()
    assert os.listdir(runtime_dir) == []


def test_a_default_directory_that_is_someone_elses_symlink_is_refused(runtime_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)  # even pointing at a directory of ours: its maker can re-point it
    runtime_dir.symlink_to(target)
    os.lchown(runtime_dir, NOBODY, NOBODY)
    with pytest.raises(ConfigurationError, match=r"symbolic link made by nobody \(uid 65534\)"):
        moot.connect()
    assert os.listdir(target) == []


# -- the attack of the issue, with real accounts --------------------------------

def test_a_second_account_is_refused_the_directory_a_stranger_prepared(shared_tmp: str) -> None:
    """The attacker (nobody) makes the victim's default directory in the
    shared temporary directory first, writable by all; the victim, with no
    runtime directory (cron, systemd units, containers), connects with no URL.
    It must refuse instead of locking inside the stranger's directory."""
    victim_dir = os.path.join(shared_tmp, "moot-victim")
    prepare = f"import os; os.mkdir({victim_dir!r}); os.chmod({victim_dir!r}, 0o777)"
    made = _run_as(NOBODY, NOBODY, prepare, _child_env(shared_tmp, "nobody"))
    assert made.returncode == 0, made.stderr
    assert os.stat(victim_dir).st_uid == NOBODY

    victim = _run_as(VICTIM, VICTIM, _CONNECT, _child_env(shared_tmp, "victim"))
    assert victim.returncode == 3, (victim.stdout, victim.stderr)
    assert f"REFUSED ConfigurationError refusing to use {victim_dir!r}" in victim.stdout
    assert "writable by every user (mode 0777)" in victim.stdout and "it belongs to nobody (uid 65534)" in victim.stdout
    assert "chmod" not in victim.stdout  # not the victim's to fix
    assert os.listdir(victim_dir) == []  # no lock, no session file in the stranger's directory

    os.chmod(victim_dir, 0o755)  # the stranger tidies up but keeps it: still theirs
    victim = _run_as(VICTIM, VICTIM, _CONNECT, _child_env(shared_tmp, "victim"))
    assert victim.returncode == 3, (victim.stdout, victim.stderr)
    assert "owned by nobody (uid 65534), not by uid 61001" in victim.stdout


def test_a_second_account_without_a_stranger_gets_its_own_0700_directory(shared_tmp: str) -> None:
    victim = _run_as(VICTIM, VICTIM, _CONNECT, _child_env(shared_tmp, "victim"))
    victim_dir = os.path.join(shared_tmp, "moot-victim")
    assert victim.returncode == 0, (victim.stdout, victim.stderr)
    assert f"LOCKED in {victim_dir}" in victim.stdout
    info = os.stat(victim_dir)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (VICTIM, 0o700)
    attacker = _run_as(NOBODY, NOBODY, _CONNECT, _child_env(shared_tmp, "nobody"), f"file://{victim_dir}")
    assert attacker.returncode != 0  # another account cannot even look in
    assert "LOCKED" not in attacker.stdout


# -- explicit directories --------------------------------------------------------

def test_an_explicit_directory_follows_the_same_rules(tmp_path: Path) -> None:
    coord = tmp_path / "coord"
    coord.mkdir()
    os.chmod(coord, 0o1777)  # sticky does not make the directory itself safe
    with pytest.raises(ConfigurationError, match="writable by every user") as caught:
        moot.connect(f"file://{coord}")
    assert "$MOOT_URL" not in str(caught.value) and "file:///path/to/dir" in str(caught.value)
    os.chmod(coord, 0o755)
    os.chown(coord, NOBODY, NOBODY)
    with pytest.raises(ConfigurationError, match="owned by nobody"):
        moot.connect(f"file://{coord}")


def test_a_directory_inside_a_sticky_world_writable_parent_is_fine(shared_tmp: str) -> None:
    with moot.connect(f"file://{shared_tmp}/mine") as coordinator:
        assert coordinator.lock("a").acquire(timeout=5)
    assert _mode(f"{shared_tmp}/mine") == 0o700


def test_created_files_and_directories_are_owner_only_by_default(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with moot.connect(f"file://{tmp_path}/coord", namespace="ns") as coordinator:
            assert coordinator.lock("a/b").acquire(timeout=5)
            coordinator.group("g").join()
            files, dirs = _tree(tmp_path / "coord")
    finally:
        os.umask(old)
    assert len(files) >= 4 and len(dirs) >= 4  # keys, .lock files, the session and .sessions; their directories
    assert files == dict.fromkeys(files, 0o600)
    assert dirs == dict.fromkeys(dirs, 0o700)


def _tree(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    """The modes of the files and of the directories under ``root`` (and of ``root``)."""
    files: dict[str, int] = {}
    dirs = {str(root): _mode(root)}
    for top, subdirs, names in os.walk(root):
        dirs.update((os.path.join(top, name), _mode(os.path.join(top, name))) for name in subdirs)
        files.update((os.path.join(top, name), _mode(os.path.join(top, name))) for name in names)
    return files, dirs


# -- sharing through a group -------------------------------------------------------

_HOLD = """
import sys, moot
with moot.connect(sys.argv[1], timeout=10, namespace="ns") as coordinator:
    lock = coordinator.lock("job")
    print("TRY", lock.acquire(blocking=False), flush=True)
    if sys.argv[2] == "hold":
        coordinator.group("workers").join()
        print("HELD", flush=True)
        sys.stdin.readline()  # until the test says release
        lock.release()
    print("DONE", flush=True)
"""


def test_two_users_of_one_group_share_a_directory_with_mode_0660(shared_tmp: str) -> None:
    os.chmod(shared_tmp, 0o755)
    coord = os.path.join(shared_tmp, "coord")
    os.mkdir(coord)
    os.chown(coord, 0, SHARED_GID)
    os.chmod(coord, 0o2770)  # as `install -d -m 2770 -g GROUP` makes it
    url = f"file://{coord}?mode=0660"
    env = _child_env(shared_tmp, "service")
    command = [sys.executable, "-c", _HOLD, url]

    def service(uid: int, how: str) -> subprocess.Popen[str]:
        return subprocess.Popen(_as_user(uid, uid, [*command, how], env, groups=(SHARED_GID,)), env=env,
                                cwd=shared_tmp, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    holder = service(SERVICE_A, "hold")
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == "TRY True\n", holder.stderr.read() if holder.stderr else ""
    assert holder.stdout.readline() == "HELD\n"

    files, dirs = _tree(Path(coord))
    assert files == dict.fromkeys(files, 0o660)  # the umask (022) did not take g+w away
    assert {p: m & 0o777 for p, m in dirs.items()} == dict.fromkeys(dirs, 0o770)
    assert {os.stat(p).st_gid for p in [*files, *dirs]} == {SHARED_GID}  # the set-group-ID bit was kept
    assert {os.stat(p).st_uid for p in files} == {SERVICE_A}

    other = subprocess.run(_as_user(SERVICE_B, SERVICE_B, [*command, "try"], env, groups=(SHARED_GID,)),
                           env=env, cwd=shared_tmp, capture_output=True, text=True, timeout=BOUND, check=False)
    assert (other.returncode, other.stdout) == (0, "TRY False\nDONE\n"), other.stderr  # sees A's lock

    holder.stdin.write("release\n")
    holder.stdin.flush()
    out, err = holder.communicate(timeout=BOUND)
    assert (holder.returncode, out) == (0, "DONE\n"), err
    other = subprocess.run(_as_user(SERVICE_B, SERVICE_B, [*command, "try"], env, groups=(SHARED_GID,)),
                           env=env, cwd=shared_tmp, capture_output=True, text=True, timeout=BOUND, check=False)
    assert (other.returncode, other.stdout) == (0, "TRY True\nDONE\n"), other.stderr

    # Without ?mode=0660 the same directory is refused: it is root's and group-writable.
    alone = _run_as(SERVICE_B, SERVICE_B, _CONNECT, env, f"file://{coord}", groups=(SHARED_GID,))
    assert alone.returncode == 3 and "owned by root (uid 0)" in alone.stdout and "mode=0660" in alone.stdout


def test_mode_0660_refuses_a_strangers_directory_of_a_group_not_ours(shared_tmp: str) -> None:
    coord = os.path.join(shared_tmp, "coord")
    os.mkdir(coord)
    os.chown(coord, NOBODY, NOBODY)
    os.chmod(coord, 0o775)
    result = _run_as(SERVICE_A, SERVICE_A, _CONNECT, _child_env(shared_tmp, "service"), f"file://{coord}?mode=0660",
                     groups=(SHARED_GID,))
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "group nogroup (gid 65534) is not one of uid 61002's" in result.stdout


def test_mode_0660_files_keep_group_write_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        with moot.connect(f"file://{tmp_path}/coord?mode=0660") as coordinator:
            assert coordinator.lock("a").acquire(timeout=5)
            files, dirs = _tree(tmp_path / "coord")
    finally:
        os.umask(old)
    assert files == dict.fromkeys(files, 0o660)
    assert dirs == dict.fromkeys(dirs, 0o770)


# -- the mode option ---------------------------------------------------------------

@pytest.mark.parametrize(("given", "mode"), [("0600", 0o600), ("600", 0o600), ("0o600", 0o600),
                                             ("0660", 0o660), ("660", 0o660), ("0o660", 0o660),
                                             (0o660, 0o660), (0o600, 0o600)])
def test_mode_accepts_its_documented_spellings(given: object, mode: int) -> None:
    assert parse_mode({"mode": given}) == mode


@pytest.mark.parametrize("given", ["0666", "0644", "0640", "0700", "0777", "660 ", " 0660", "06600", "0x1b0",
                                   "rw-rw----", "", "0o9", "\u0660\u0666\u0666\u0660", True, 0o666, 432.0, None])
def test_mode_refuses_anything_else_naming_the_accepted_values(given: object) -> None:
    with pytest.raises(InvalidURL, match=r"mode=0600 .* or mode=0660"):
        parse_mode({"mode": given})


@pytest.mark.parametrize("query", ["mode=0666", "mode=0640", "mode=", "mode=660+", "mode=g%2Bw"])
def test_a_bad_mode_in_the_url_is_refused_before_anything_is_made(query: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidURL, match=r"option mode=.* mode=0600 .* or mode=0660"):
        moot.connect(f"file://{tmp_path}/coord?{query}")
    assert not (tmp_path / "coord").exists()
