"""Errors a retry loop can trust (issue 15, item 4): configuration errors
are never ConnectionLost, refused credentials are AuthenticationFailed on
every backend, messages point at the fix (the nearest known scheme or
option, $MOOT_URL, the command installing a missing driver), and every
call on a closed coordinator is CoordinatorClosed. Against real servers."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import moot
from moot.errors import AuthenticationFailed
from tests import servers
from tests.conftest import Connect

ROOT = Path(__file__).resolve().parent.parent


# -- what the user typed ----------------------------------------------------------
@pytest.mark.parametrize(("url", "near"), [("redsi://127.0.0.1", "redis://"), ("zookeper://h:2181", "zookeeper://"),
                                           ("postgre://h/db", "postgres"), ("memcache://h", "memcached://")])
def test_an_unknown_scheme_suggests_the_nearest(url: str, near: str) -> None:
    with pytest.raises(moot.UnknownBackend, match=f"did you mean {near}"):
        moot.connect(url)


def test_an_unknown_option_suggests_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(moot.InvalidURL, match=r"tll .*did you mean ttl\?"):
        moot.connect(f"file://{tmp_path}?tll=3")
    with pytest.raises(moot.InvalidURL, match=r"did you mean namespace\?"):
        moot.connect(f"file://{tmp_path}", namespce="x")


def test_a_bad_moot_url_names_moot_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOOT_URL", "reddis://127.0.0.1:6379")
    with pytest.raises(moot.UnknownBackend, match=r"^\$MOOT_URL .*did you mean redis://\?"):
        moot.connect()
    monkeypatch.setenv("MOOT_URL", f"file://{tmp_path}?ttl=-1")
    with pytest.raises(moot.InvalidURL, match=r"^\$MOOT_URL "):
        moot.connect()
    # An explicit URL is the caller's: $MOOT_URL is not blamed for it.
    with pytest.raises(moot.UnknownBackend) as caught:
        moot.connect("reddis://127.0.0.1:6379")
    assert "MOOT_URL" not in str(caught.value)


def test_a_missing_driver_says_which_extra_and_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kazoo", None)  # import kazoo now raises ImportError
    with pytest.raises(moot.DriverNotInstalled) as caught:
        moot.connect("zookeeper://127.0.0.1:1")
    message = str(caught.value)
    assert "install the 'zookeeper' extra of moot" in message
    assert f"{sys.executable} -m pip install" in message
    # This moot runs from (or was installed from) this checkout: the command says so.
    assert f"{ROOT}[zookeeper]" in message


# -- file:// ----------------------------------------------------------------------------
def test_an_unusable_file_directory_is_a_configuration_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    with pytest.raises(moot.ConfigurationError) as caught:
        moot.connect(f"file://{not_a_dir}/coord", timeout=2)
    assert not isinstance(caught.value, moot.ConnectionLost)
    assert "mkdir -p" in str(caught.value)


def test_an_unwritable_file_directory_is_a_configuration_error(tmp_path: Path) -> None:
    """Permission refused: a directory without write permission, or, for
    root (who may write anywhere), a directory sysfs refuses to create."""
    if os.geteuid() == 0:
        path = Path("/sys") / f"moot-{uuid.uuid4().hex[:8]}"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        path = locked / "coord"
    with pytest.raises(moot.ConfigurationError) as caught:
        moot.connect(f"file://{path}", timeout=2)
    assert not isinstance(caught.value, moot.ConnectionLost)
    message = str(caught.value)
    assert ("Permission denied" in message or "Operation not permitted" in message), message
    assert "writable by this user" in message and f"mkdir -p {path}" in message


# -- credentials --------------------------------------------------------------------
def test_redis_refused_credentials(server: Callable[[str], str]) -> None:
    url = server("redis")
    raw = redis.Redis.from_url(url)
    user, password = f"moot-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    raw.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["moot:*"], channels=["moot:*"],
                    commands=["+@all"])
    try:
        hostport = url.split("://", 1)[1].split("/", 1)[0]
        with pytest.raises(AuthenticationFailed) as caught:
            moot.connect(f"redis://{user}:wrong-{password}@{hostport}/0", timeout=5)
        assert password not in str(caught.value) and "user:password" in str(caught.value)
        assert isinstance(caught.value, moot.ConfigurationError)
        assert not isinstance(caught.value, moot.ConnectionLost | moot.BackendError)
    finally:
        raw.acl_deluser(user)
        raw.close()


def test_postgresql_refused_credentials(server: Callable[[str], str]) -> None:
    url = server("postgresql")
    role = f"nobody_{uuid.uuid4().hex[:8]}"  # no such role: the server refuses the login
    bad = url.replace("postgres@", f"{role}:secret-pw@", 1)
    assert bad != url
    with pytest.raises(AuthenticationFailed) as caught:
        moot.connect(bad, timeout=5)
    assert "secret-pw" not in str(caught.value) and role in str(caught.value)


def test_mysql_refused_credentials(server: Callable[[str], str]) -> None:
    url = server("mysql")
    user = f"nobody_{uuid.uuid4().hex[:8]}"  # no such user: the server refuses the login
    bad = url.replace("root@", f"{user}:secret-pw@", 1)
    assert bad != url
    with pytest.raises(AuthenticationFailed) as caught:
        moot.connect(bad, timeout=5)
    assert "secret-pw" not in str(caught.value) and "user:password" in str(caught.value)
    assert not isinstance(caught.value, moot.ConnectionLost | moot.BackendError)


@pytest.fixture
def memcached_with_logins(tmp_path: Path) -> Iterator[str]:
    """A memcached of the test's own that wants a login (-Y); its address."""
    with servers.memcached_with_login(tmp_path, "alice", "s3cret") as address:
        yield address


def test_memcached_refused_credentials(memcached_with_logins: str) -> None:
    address = memcached_with_logins
    with moot.connect(f"memcached://alice:s3cret@{address}", timeout=5) as coord:
        assert coord.lock("x").acquire(timeout=5)
    for url in (f"memcached://alice:wrong@{address}", f"memcached://{address}"):
        with pytest.raises(AuthenticationFailed) as caught:
            moot.connect(url, timeout=5)
        assert "wrong" not in str(caught.value).replace(url.replace("alice:wrong", "alice:***"), "")


def test_zookeeper_credentials_of_another_identity(server: Callable[[str], str]) -> None:
    base = server("zookeeper").rstrip("/") + f"/creds-{uuid.uuid4().hex[:8]}"
    owner = base.replace("zookeeper://", "zookeeper://alice:s3cret@", 1)
    with moot.connect(owner, timeout=5) as coord:
        assert coord.lock("x").acquire(timeout=5)
        for url in (base.replace("zookeeper://", "zookeeper://alice:wrong@", 1), base):
            with pytest.raises(AuthenticationFailed) as caught:
                moot.connect(url, timeout=5)
            assert "s3cret" not in str(caught.value) and "wrong" not in str(caught.value)


def test_etcd_refused_credentials_type() -> None:
    """etcd's refusal (tests/test_etcd_backend.py::test_password_authentication
    runs it on a cluster with auth enabled) is the same type."""
    assert issubclass(AuthenticationFailed, moot.ConfigurationError)
    assert not issubclass(AuthenticationFailed, moot.BackendError)


def test_zookeeper_oversized_value_says_too_large_with_the_limit(server: Callable[[str], str]) -> None:
    with moot.connect(server("zookeeper"), namespace=f"t-{uuid.uuid4().hex[:8]}", timeout=5) as coord:
        too_big = b"x" * (2 * 1024 * 1024)  # over ZooKeeper's jute.maxbuffer (1 MiB) too
        with pytest.raises(moot.InvalidArgument, match=r"over moot's limit of \d+ bytes"):
            coord.backend.create("big", too_big)
        with pytest.raises(moot.InvalidArgument, match=r"the limit is \d+ bytes"):
            coord.group("g").join({"blob": "y" * (1024 * 1024)})
        assert coord.group("g").join({"small": 1}) is None


# -- a closed coordinator -----------------------------------------------------------
def test_every_call_on_a_closed_coordinator_is_coordinator_closed(connect: Connect) -> None:
    coord = connect()
    coord.close()
    calls: list[Callable[[], object]] = [
        lambda: coord.lock_info("x"), coord.locks, coord.groups, coord.semaphores, coord.ping,
        lambda: coord.watch_lock("x", lambda: None), lambda: coord.lock("x").acquire(),
        lambda: coord.group("g").join(), lambda: coord.group("g").members(),
        lambda: coord.election("e").campaign(timeout=1), lambda: coord.semaphore("s", 1).acquire(),
        lambda: coord.rwlock("r").acquire_read(),
    ]
    for call in calls:
        with pytest.raises(moot.CoordinatorClosed, match=r"moot\.connect"):
            call()
