"""connect(), URLs and options: typed errors that say what to do, no secret ever shown."""

from __future__ import annotations

import logging
import threading

import pytest

import moot
from moot import url as url_module


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(moot.UnknownBackend) as err:
        moot.connect("nope://x")
    assert isinstance(err.value, moot.MootError)
    for scheme in ("file", "memory", "redis", "zookeeper", "etcd"):
        assert scheme in str(err.value)


@pytest.mark.parametrize("bad", ["", "   ", "just-a-path", "redis://host:notaport", "redis://host:99999",
                                 "memory://x?ttl", "memory://x?ttl=1&ttl=2", "redis://[::1"])
def test_malformed_urls(bad: str) -> None:
    with pytest.raises(moot.InvalidURL):
        moot.connect(bad)


@pytest.mark.parametrize("options", [{"ttl": -1}, {"ttl": "abc"}, {"ttl": 0}, {"ttl": float("nan")},
                                     {"heartbeat": 5, "ttl": 2}, {"bogus": 1}, {"namespace": ""}])
def test_bad_option_values(options: dict[str, object]) -> None:
    with pytest.raises(moot.MootError):
        moot.connect("memory://opts", **options)


def test_bad_option_in_url_query() -> None:
    with pytest.raises(moot.InvalidURL, match="ttl"):
        moot.connect("memory://opts?ttl=soon")


def test_password_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-pw"
    parsed = url_module.parse_url(f"redis://user:{secret}@127.0.0.1:1/0")
    assert parsed.password == secret
    assert secret not in repr(parsed) and secret not in str(parsed)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(moot.MootError) as err:
        moot.connect(f"memory://user:{secret}@pw?bogus=1")
    assert secret not in str(err.value)
    with pytest.raises(moot.MootError) as err:
        moot.connect(f"nope://user:{secret}@host")
    assert secret not in str(err.value)
    assert secret not in caplog.text


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(url_module.BACKENDS, "redis",
                        ("moot.backends.redis", "RedisBackend", "redis", "no_such_client_module"))
    with pytest.raises(moot.DriverNotInstalled, match=r"pip install 'moot\[redis\]'"):
        moot.connect("redis://127.0.0.1:1")


def test_default_url_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOOT_URL", "memory://from-env")
    with moot.connect() as coord:
        assert coord.url == "memory://from-env"
    monkeypatch.delenv("MOOT_URL")
    assert moot.default_url().startswith("file://")


def test_default_member_ids_are_unique() -> None:
    with moot.connect("memory://ids") as a, moot.connect("memory://ids") as b:
        assert a.member_id != b.member_id


def test_context_manager_closes_and_heartbeat_is_an_os_thread() -> None:
    with moot.connect("memory://cm") as coord:
        heartbeat = [t for t in threading.enumerate() if t.name == "moot-heartbeat"]
        assert heartbeat and all(t.native_id for t in heartbeat)
        assert "open" in repr(coord)
    assert coord.closed
    with pytest.raises(moot.CoordinatorClosed):
        coord.lock("x").acquire()
    coord.close()  # idempotent
