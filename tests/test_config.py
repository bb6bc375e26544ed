"""moot.from_config: a [coordination] section from an INI file, a ConfigParser,
a mapping or oslo.config, with a standalone mode when backend_url is empty."""

from __future__ import annotations

import configparser
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

import moot
from moot.config import register_opts, standalone_url


@pytest.fixture
def opened() -> Iterator[list[moot.Coordinator]]:
    coords: list[moot.Coordinator] = []
    yield coords
    for coord in coords:
        coord.close()


def _ini(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def test_ini_file_with_cinder_option_names(tmp_path: Path, opened: list[moot.Coordinator]) -> None:
    conf = _ini(tmp_path / "cinder.conf", f"""
[DEFAULT]
state_path = /var/lib/cinder
namespace = not-inherited-as-oslo-reads-files

[coordination]
backend_url = file://{tmp_path}/coord?namespace=cinder
heartbeat = 0.5
initial_reconnect_backoff = 0.2
max_reconnect_backoff = 30
ttl = 3
member_id = volume-host-1
""")
    coord = moot.from_config(conf)
    opened.append(coord)
    assert (coord.ttl, coord.heartbeat_interval) == (3.0, 0.5)
    assert (coord.session.initial_reconnect_backoff, coord.session.max_reconnect_backoff) == (0.2, 30.0)
    assert (coord.member_id, coord.namespace) == ("volume-host-1", "cinder")
    assert coord.url.startswith("file://")
    with coord.lock("volume-1") as held:
        assert held.token is not None
    # A path object, another section name, and keyword overrides that win.
    other = moot.from_config(tmp_path / "cinder.conf", member_id="volume-host-2", ttl=4.0)
    opened.append(other)
    assert (other.member_id, other.ttl) == ("volume-host-2", 4.0)
    unset = moot.from_config(conf, member_id="volume-host-3", ttl=None)  # None: no override
    opened.append(unset)
    assert unset.ttl == 3.0
    with pytest.raises(moot.ConfigurationError, match="keyword overrides"):
        moot.from_config(conf, ttl=-1)


def test_configparser_and_mapping(tmp_path: Path, opened: list[moot.Coordinator]) -> None:
    parser = configparser.ConfigParser()
    parser.read_dict({"DEFAULT": {"debug": "true", "ttl": "2"}, "locks": {"backend_url": f"file://{tmp_path}"}})
    coord = moot.from_config(parser, section="locks")  # configparser's own [DEFAULT] inheritance applies
    opened.append(coord)
    assert coord.ttl == 2.0
    mapping = moot.from_config({"backend_url": f"file://{tmp_path}", "heartbeat": 0.25, "member_id": None})
    opened.append(mapping)
    assert mapping.heartbeat_interval == 0.25


def test_empty_backend_url_is_standalone(caplog: pytest.LogCaptureFixture, opened: list[moot.Coordinator]) -> None:
    with caplog.at_level(logging.INFO, logger="moot.config"):
        first = moot.from_config({"backend_url": ""}, member_id="api")
    opened.append(first)
    assert "standalone" in caplog.text
    second = moot.from_config({}, member_id="conductor")  # absent counts as empty
    opened.append(second)
    assert first.url == second.url == standalone_url() and str(os.getpid()) in first.url
    # In-process locks: the two coordinators of this process exclude each other.
    held = first.lock("node-1")
    assert held.acquire()
    assert not second.lock("node-1").acquire(blocking=False)
    held.release()
    second.group("conductors").join()
    assert set(first.group("conductors").members()) == {"conductor"}


@pytest.mark.parametrize("options", [
    {"heartbeat": "soon"},
    {"ttl": "-1"},
    {"ttl": 0},
    {"max_reconnect_backoff": "inf"},
    {"initial_reconnect_backoff": True},
    {"hearbeat": "1"},
    {"member_id": 42},
])
def test_bad_values_are_typed_errors(options: dict[str, object]) -> None:
    with pytest.raises(moot.ConfigurationError) as info:
        moot.from_config({"backend_url": "memory://bad", **options})
    assert next(iter(options)).split("_")[0] in str(info.value)


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(moot.ConfigurationError, match="missing"):
        moot.from_config(tmp_path / "absent.conf")
    with pytest.raises(moot.ConfigurationError, match=r"\[coordination\] section is missing"):
        moot.from_config(_ini(tmp_path / "other.conf", "[DEFAULT]\ndebug = true\n"))
    with pytest.raises(moot.ConfigurationError, match="malformed"):
        moot.from_config(_ini(tmp_path / "broken.conf", "backend_url = x\n"))
    with pytest.raises(moot.ConfigurationError, match="lock_path"):
        moot.from_config(_ini(tmp_path / "unknown.conf", "[coordination]\nlock_path = /tmp\n"))
    with pytest.raises(moot.ConfigurationError, match="ConfigOpts"):
        moot.from_config(42)
    with pytest.raises(moot.ConfigurationError, match="unknown"):
        moot.from_config({}, timeout=3)
    with pytest.raises(moot.UnknownBackend):
        moot.from_config({"backend_url": "nosuch://x"})
    with pytest.raises(moot.ConfigurationError, match="shorter than ttl"):
        moot.from_config({"backend_url": "memory://bad", "ttl": 1, "heartbeat": 2})


def test_percent_signs_in_urls_are_kept(tmp_path: Path, opened: list[moot.Coordinator]) -> None:
    directory = tmp_path / "a b"
    conf = _ini(tmp_path / "app.conf", f"[coordination]\nbackend_url = file://{str(directory).replace(' ', '%20')}\n")
    opened.append(moot.from_config(conf))
    assert directory.is_dir()


def test_oslo_config(tmp_path: Path, opened: list[moot.Coordinator]) -> None:
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    register_opts(conf)
    register_opts(conf)  # idempotent
    path = _ini(tmp_path / "inspector.conf",
                f"[coordination]\nbackend_url = file://{tmp_path}/coord\nheartbeat = 0.5\nttl = 2\n")
    conf(args=[], default_config_files=[str(path)])
    coord = moot.from_config(conf, member_id="conductor-1")
    opened.append(coord)
    assert (coord.heartbeat_interval, coord.ttl, coord.member_id) == (0.5, 2.0, "conductor-1")
    assert coord.url == f"file://{tmp_path}/coord"

    standalone = cfg.ConfigOpts()
    register_opts(standalone, group="inspector_coordination")
    standalone(args=[], default_config_files=[])
    opened.append(moot.from_config(standalone, section="inspector_coordination"))
    assert opened[-1].url == standalone_url()

    with pytest.raises(moot.ConfigurationError, match="register_opts"):
        moot.from_config(standalone)  # no [coordination] group registered there
    bad = cfg.ConfigOpts()
    register_opts(bad)
    bad(args=[], default_config_files=[str(_ini(tmp_path / "bad.conf", "[coordination]\nheartbeat = soon\n"))])
    with pytest.raises(moot.ConfigurationError, match="heartbeat"):
        moot.from_config(bad)


SECRET = "Sekr1t-config-pw"


@pytest.mark.parametrize(("how", "source"), [
    ("a line before any section", f"backend_url = redis://app:{SECRET}@127.0.0.1:1/0\n[coordination]\n"),
    ("a line that is not name = value", f"[coordination]\nbackend_url = memory://x\n[a\n{SECRET}\n"),
    ("a password with a bare %", None),
    ("backend_url that is not a string", None),
])
def test_configuration_errors_never_show_the_password(tmp_path: Path, how: str, source: str | None) -> None:
    """The messages of a malformed file, an interpolation error (it quotes
    the value) and a mistyped backend_url hide what may be a password."""
    config: object
    if how == "a password with a bare %":
        config = configparser.ConfigParser()  # its default interpolation chokes on the '%'
        config.read_string(f"[coordination]\nbackend_url = redis://app:{SECRET}%zz@127.0.0.1:1/0\n")
    elif how == "backend_url that is not a string":
        config = {"backend_url": f"redis://app:{SECRET}@127.0.0.1:1/0".encode()}
    else:
        assert source is not None
        config = _ini(tmp_path / "coordination.conf", source)
    with pytest.raises(moot.ConfigurationError) as info:
        moot.from_config(config)
    shown = f"{info.value!r} {''.join(traceback.format_exception(info.value))}"  # with what it chains
    assert "Sekr1t" not in shown
