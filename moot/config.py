"""Coordination from configuration: a ``[coordination]`` section, as cinder
and ironic-inspector configure it.

    [coordination]
    backend_url = zookeeper://zk1:2181,zk2:2181
    heartbeat = 1.0
    initial_reconnect_backoff = 0.1
    max_reconnect_backoff = 60.0

The source is one of:

* an INI file path, read as oslo.config reads it: no ``%`` interpolation, and
  ``[DEFAULT]`` options are not inherited by the section;
* a :class:`configparser.ConfigParser` (its own interpolation and ``[DEFAULT]``
  inheritance apply);
* a mapping of option names to values (the section's content);
* with the ``moot[oslo]`` extra, an ``oslo.config`` ``ConfigOpts`` on which
  :func:`register_opts` was called.

Guarantees:

* An empty or absent ``backend_url`` means *standalone*: an in-process store
  private to this process (locks exclude only this process's threads, groups
  list only its own members), logged at INFO. Right for a single process, as
  ironic-inspector's standalone mode; wrong for several (they would not
  exclude each other).
* Every value is checked before anything connects: a bad number, an unknown
  option, a missing file or section raise ConfigurationError naming the
  option and where it came from. A bad URL raises InvalidURL (also a
  ConfigurationError).
* Keyword overrides win over the source; a value that is None or an empty
  string counts as not set (moot's default applies).
"""

from __future__ import annotations

import configparser
import importlib
import logging
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from moot.coordinator import Coordinator, connect
from moot.errors import ConfigurationError, missing_driver
from moot.url import redact

log = logging.getLogger("moot.config")

#: option name -> help text (also registered into oslo.config).
OPTIONS: dict[str, str] = {
    "backend_url": "Backend URL, e.g. file:///var/lib/app/coord, redis://host:6379, zookeeper://h1:2181,h2:2181, "
                   "etcd://host:2379. Empty: standalone (in-process locks and groups; one process only).",
    "member_id": "This process's member id in groups, locks and elections (default: host-pid-random).",
    "namespace": "Namespace isolating this application's names on a shared backend (default: 'default').",
    "ttl": "Session time-to-live in seconds: a crashed process's locks and memberships are freed "
           "within it (default 10).",
    "heartbeat": "Seconds between heartbeats keeping the session alive; shorter than ttl (default ttl/3).",
    "initial_reconnect_backoff": "Seconds to wait after a failed reconnection to the backend (default 0.1).",
    "max_reconnect_backoff": "Maximum seconds between reconnection attempts (default max(1, ttl/3)).",
}
_SECONDS = ("ttl", "heartbeat", "initial_reconnect_backoff", "max_reconnect_backoff")


def standalone_url() -> str:
    """The in-process store used when ``backend_url`` is empty: one per process."""
    return f"memory://moot-standalone-{os.getpid()}"


def from_config(source: Any, section: str = "coordination", **overrides: Any) -> Coordinator:
    """Connect as configured by ``section`` of ``source``; see the module docstring.

    ``overrides`` are option values that win over the source, e.g.
    ``member_id=socket.gethostname()``.
    """
    values, where = _read(source, section)
    _reject_unknown(overrides, "keyword overrides")
    settings = _settings(values, where)
    settings.update(_settings(overrides, "keyword overrides"))
    url = settings.pop("backend_url", None)
    if url is None:
        url = standalone_url()
        log.info("moot: backend_url is empty in %s: coordination is standalone (in-process locks and "
                 "groups, this process only)", where)
    return connect(url, **settings)


def _settings(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Checked values, leaving out those that are not set (None or empty)."""
    settings: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or value == "":
            continue
        if name in _SECONDS:
            settings[name] = _seconds(name, value, where)
        elif not isinstance(value, str):  # not shown: backend_url's may hold a password
            raise ConfigurationError(f"{name} in {where} must be a string, not {type(value).__name__}")
        else:
            settings[name] = value
    return settings


def _read(source: Any, section: str) -> tuple[dict[str, Any], str]:
    """The section's known options and a description of where they came from."""
    cfg = sys.modules.get("oslo_config.cfg")  # a ConfigOpts exists only if oslo.config was imported
    if cfg is not None and isinstance(source, cfg.ConfigOpts):
        return _read_oslo(cfg, source, section), f"[{section}]"
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        # Read as oslo.config reads it: no '%' interpolation (common in URLs), and
        # [DEFAULT] is a section of its own, not inherited by [coordination].
        parser = configparser.ConfigParser(interpolation=None, default_section="\x00no default section")
        try:
            if not parser.read(path, encoding="utf-8"):
                raise ConfigurationError(f"configuration file {path!r} cannot be read (missing?)")
        except configparser.MissingSectionHeaderError as exc:  # its lines are not shown: they may hold a password
            raise ConfigurationError(f"configuration file {path!r} is malformed: line {exc.lineno} comes before "
                                     f"any [section] header") from None
        except configparser.ParsingError as exc:
            lines = ", ".join(str(lineno) for lineno, _ in exc.errors)
            raise ConfigurationError(f"configuration file {path!r} is malformed: line(s) {lines} are not "
                                     f"'name = value'") from None
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"configuration file {path!r} is malformed: {redact(str(exc))}") from None
        return _read_parser(parser, section, f"{path}: [{section}]")
    if isinstance(source, configparser.RawConfigParser):
        return _read_parser(source, section, f"[{section}]")
    if isinstance(source, Mapping):
        values = dict(source)
        _reject_unknown(values, "the configuration mapping")
        return values, "the configuration mapping"
    raise ConfigurationError(f"cannot read configuration from a {type(source).__name__}; give an INI file path, "
                             f"a configparser.ConfigParser, a mapping, or an oslo.config ConfigOpts")


def _read_parser(parser: configparser.RawConfigParser, section: str, where: str) -> tuple[dict[str, Any], str]:
    if not parser.has_section(section):
        raise ConfigurationError(f"{where} section is missing; add it with at least 'backend_url =' "
                                 f"(empty for standalone)")
    inherited = parser.defaults()  # [DEFAULT] options show in every section; not ours to judge
    try:
        present = {name: parser.get(section, name) for name in parser.options(section)}
    except configparser.Error as exc:  # an interpolation error quotes the value, maybe a password
        raise ConfigurationError(f"{where}: {redact(str(exc))}") from None
    _reject_unknown({name: v for name, v in present.items() if name not in inherited}, where)
    return {name: v for name, v in present.items() if name in OPTIONS}, where


def _reject_unknown(values: Mapping[str, Any], where: str) -> None:
    unknown = sorted(str(name) for name in values if name not in OPTIONS)
    if unknown:
        raise ConfigurationError(f"unknown coordination option(s) {', '.join(unknown)} in {where}; "
                                 f"known: {', '.join(OPTIONS)}")


def _seconds(name: str, value: Any, where: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} = {value!r} in {where}: not a number of seconds") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError(f"{name} = {value!r} in {where}: must be a positive number of seconds")
    return number


# -- oslo.config (extra moot[oslo]) ------------------------------------------
def _oslo() -> Any:
    try:
        return importlib.import_module("oslo_config.cfg")
    except ImportError:
        raise missing_driver("oslo.config support", "oslo.config", "oslo") from None


def register_opts(conf: Any, group: str = "coordination") -> None:
    """Register moot's options into ``group`` of the oslo.config ConfigOpts
    ``conf`` (idempotent); then ``moot.from_config(conf)`` reads them."""
    cfg = _oslo()
    opts = [cfg.StrOpt("backend_url", default="", secret=True, help=OPTIONS["backend_url"])]
    opts += [cfg.StrOpt(name, help=OPTIONS[name]) for name in ("member_id", "namespace")]
    opts += [cfg.FloatOpt(name, help=OPTIONS[name]) for name in _SECONDS]
    conf.register_opts(opts, group=group)


def _read_oslo(cfg: Any, conf: Any, section: str) -> dict[str, Any]:
    try:
        group = getattr(conf, section)
        return {name: getattr(group, name) for name in OPTIONS}
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        raise ConfigurationError(f"the oslo.config group [{section}] lacks moot's options: call "
                                 f"moot.config.register_opts(conf, group={section!r}) first") from None
    except cfg.Error as exc:
        raise ConfigurationError(f"[{section}]: {redact(str(exc))}") from None
