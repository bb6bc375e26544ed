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
    module, backend_class, extra, _ = url_module.BACKENDS["zookeeper"]
    monkeypatch.setitem(url_module.BACKENDS, "zookeeper", (module, backend_class, extra, "no_such_client_module"))
    with pytest.raises(moot.DriverNotInstalled, match=r"install the 'zookeeper' extra of moot: .* -m pip install"):
        moot.connect("zookeeper://127.0.0.1:1")


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


def test_option_float_refuses_bools_and_states_its_bounds() -> None:
    option_float = url_module.option_float
    with pytest.raises(moot.InvalidURL, match="not a number"):
        option_float({"ttl": True}, "ttl", 10.0)
    with pytest.raises(moot.InvalidURL, match="not a number"):
        option_float({"ttl": b"10"}, "ttl", 10.0)
    with pytest.raises(moot.InvalidURL, match="at most 3600"):
        option_float({"ttl": 1e12}, "ttl", 10.0, maximum=3600)
    with pytest.raises(moot.InvalidURL, match=r"at least 0\.5"):
        option_float({"ttl": "0.4"}, "ttl", 10.0, minimum=0.5, allow_equal=True)
    with pytest.raises(moot.InvalidURL, match="greater than 0"):
        option_float({"ttl": 0}, "ttl", 10.0)
    with pytest.raises(moot.InvalidURL, match="too large"):
        option_float({"ttl": 10**400}, "ttl", 10.0)
    with pytest.raises(moot.InvalidURL, match="too large"):
        option_float({"ttl": 10**5000}, "ttl", 10.0)  # too long even to print
    with pytest.raises(moot.InvalidURL, match="finite"):
        option_float({"ttl": "inf"}, "ttl", 10.0)
    assert option_float({"ttl": "2.5"}, "ttl", 10.0, minimum=0.5, allow_equal=True, maximum=3600) == 2.5
    assert option_float({"ttl": " 10 "}, "ttl", 1.0) == 10.0
    assert option_float({"ttl": 3600}, "ttl", 10.0, maximum=3600) == 3600.0
    assert option_float({"ttl": 0.5}, "ttl", 10.0, minimum=0.5, allow_equal=True) == 0.5
    assert option_float({}, "ttl", 7.0) == 7.0


@pytest.mark.parametrize("options", [{"ttl": True}, {"ttl": "true"}, {"timeout": False}, {"heartbeat": True},
                                     {"ttl": 1e12}, {"ttl": 10**400}, {"ttl": 0.001}, {"timeout": 1e12},
                                     {"namespace": None}, {"namespace": 5}, {"namespace": "\ud800"}])
def test_hostile_option_values_are_refused_at_connect(options: dict[str, object]) -> None:
    threads = threading.active_count()
    with pytest.raises((moot.InvalidURL, moot.InvalidName)):
        moot.connect("memory://hostile", **options)
    assert threading.active_count() == threads  # refused before any heartbeat thread started


def test_ttl_bounds_are_stated() -> None:
    with pytest.raises(moot.InvalidURL, match=r"ttl='1e12' must be at most 3600"):
        moot.connect("memory://bounds?ttl=1e12")
    with pytest.raises(moot.InvalidURL, match=r"ttl=0\.001 must be at least 0\.5"):
        moot.connect("memory://bounds", ttl=0.001)
    with moot.connect("memory://bounds?ttl=3600&timeout=3600") as coord:
        assert coord.ttl == 3600.0 and coord.timeout == 3600.0


@pytest.mark.parametrize("bad", ["redis://host:\u00b2", "redis://host:\u0663\u0663", "redis://host:\uff16\uff13\uff17\uff19",
                                 "redis://host:" + "1" * 5000, "redis@x://host", "user:pw@host://x"])
def test_urls_that_python_would_half_parse_are_invalid(bad: str) -> None:
    with pytest.raises(moot.InvalidURL):
        url_module.parse_url(bad)


def test_leading_zeros_in_a_port_still_parse() -> None:
    assert url_module.parse_url("redis://h:006379").hosts == (("h", 6379),)


@pytest.mark.parametrize("text", ["redis://user:Zq/SECRET@host:1/0", "redis://user:Zq?SECRET@host",
                                  "redis://user:Zq#SECRET@host", "redis://user:Zq@SECRET@host",
                                  "user:ZqSECRET@host", "redis://user:ZqSECRET@h:notaport",
                                  "nope://user:ZqSECRET@host", "user:ZqSECRET@host://x",
                                  "redis://user:Zq/SECRET@host:1/0?ttl=1&ttl=2"])
def test_no_piece_of_a_password_is_shown_even_unescaped(text: str) -> None:
    try:
        shown = url_module.parse_url(text).redacted()
    except moot.InvalidURL as exc:
        shown = str(exc)
    assert "Zq" not in shown and "SECRET" not in shown
