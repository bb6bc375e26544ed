"""Backend URLs: parsing, options, and printing them without their secrets.

A URL names the backend (its scheme), where it lives (hosts, path) and options
in its query string (``?ttl=10&namespace=app``). Every URL moot prints goes
through :meth:`BackendURL.redacted`, so a password never reaches a log line,
a repr or an error message.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from typing import Any

from moot.errors import InvalidURL, UnknownBackend

#: scheme -> (module path, class name, extra to install, client module to import)
BACKENDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "memory": ("moot.backends.memory", "MemoryBackend", None, None),
    "file": ("moot.backends.file", "FileBackend", None, None),
    "redis": ("moot.backends.redis", "RedisBackend", "redis", "redis"),
    "rediss": ("moot.backends.redis", "RedisBackend", "redis", "redis"),
    "redis+sentinel": ("moot.backends.redis", "RedisBackend", "redis", "redis"),
    "zookeeper": ("moot.backends.zookeeper", "ZooKeeperBackend", "zookeeper", "kazoo"),
    "kazoo": ("moot.backends.zookeeper", "ZooKeeperBackend", "zookeeper", "kazoo"),
    "etcd": ("moot.backends.etcd", "EtcdBackend", None, None),
    "etcd3+http": ("moot.backends.etcd", "EtcdBackend", None, None),
    "etcd3+https": ("moot.backends.etcd", "EtcdBackend", None, None),
}

_REDACTED = "***"


@dataclasses.dataclass(frozen=True)
class BackendURL:
    """A parsed backend URL. ``password`` is kept out of ``repr()``."""

    scheme: str
    hosts: tuple[tuple[str, int | None], ...]
    path: str
    username: str | None
    password: str | None = dataclasses.field(repr=False)
    query: Mapping[str, str]
    raw: str = dataclasses.field(repr=False)

    def redacted(self) -> str:
        """The URL as given, with any password replaced by ``***``."""
        return redact(self.raw)

    def __str__(self) -> str:
        return self.redacted()

    def host_port(self, default_port: int, index: int = 0) -> tuple[str, int]:
        """One host of the URL with ``default_port`` filled in."""
        if not self.hosts:
            return ("127.0.0.1", default_port)
        host, port = self.hosts[index]
        return (host or "127.0.0.1", port if port is not None else default_port)


def redact(url: str) -> str:
    """Return ``url`` with the password of its authority (if any) hidden."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    if ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        userinfo = f"{user}:{_REDACTED}"
    netloc = f"{userinfo}@{hostinfo}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _split_hosts(hostinfo: str, shown: str) -> tuple[tuple[str, int | None], ...]:
    hosts: list[tuple[str, int | None]] = []
    if not hostinfo:
        return ()
    for item in hostinfo.split(","):
        if not item:
            raise InvalidURL(f"empty host in {shown!r}; write host:port[,host:port...]")
        if item.startswith("["):
            host, sep, rest = item[1:].partition("]")
            if not sep:
                raise InvalidURL(f"unclosed '[' in host of {shown!r}")
            port_text = rest[1:] if rest.startswith(":") else ""
            if rest and not rest.startswith(":"):
                raise InvalidURL(f"bad host {item!r} in {shown!r}")
        else:
            host, _, port_text = item.partition(":")
        port: int | None = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise InvalidURL(f"bad port {port_text!r} in {shown!r}; use a number 1-65535")
            port = int(port_text)
        hosts.append((host, port))
    return tuple(hosts)


def parse_url(url: str) -> BackendURL:
    """Parse a backend URL, or raise :class:`InvalidURL` / :class:`UnknownBackend`."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL("the backend URL is empty; give one like 'file:///var/lib/app/coord'")
    shown = redact(url)
    if "://" not in url:
        raise InvalidURL(
            f"{shown!r} is not a URL; write scheme://..., e.g. 'file:///tmp/coord' "
            f"or 'redis://127.0.0.1:6379' (known schemes: {', '.join(sorted(BACKENDS))})"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in BACKENDS:
        raise UnknownBackend(
            f"unknown backend scheme {scheme!r} in {shown!r}; "
            f"known schemes: {', '.join(sorted(BACKENDS))}"
        )
    rest = url.split("://", 1)[1]
    authority, sep, tail = rest.partition("/")
    path = sep + tail
    path, _, query_text = path.partition("?")
    if "?" in authority:
        authority, _, query_text = authority.partition("?")
    if "#" in query_text or "#" in path:
        raise InvalidURL(f"unexpected '#' fragment in {shown!r}")
    username = password = None
    hostinfo = authority
    if "@" in authority:
        userinfo, _, hostinfo = authority.rpartition("@")
        user, has_pw, pw = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(pw) if has_pw else None
    try:
        pairs = urllib.parse.parse_qsl(query_text, keep_blank_values=True, strict_parsing=bool(query_text))
    except ValueError:
        raise InvalidURL(f"malformed query string in {shown!r}; write ?key=value&key=value") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key in query:
            raise InvalidURL(f"option {key!r} given twice in {shown!r}")
        query[key] = value
    return BackendURL(
        scheme=scheme,
        hosts=_split_hosts(hostinfo, shown),
        path=urllib.parse.unquote(path),
        username=username,
        password=password,
        query=query,
        raw=url,
    )


def option_float(options: Mapping[str, Any], name: str, default: float, *, minimum: float = 0.0,
                 allow_equal: bool = False) -> float:
    """Read a positive number option (from a URL query or keyword), with a typed error."""
    value = options.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidURL(f"option {name}={value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidURL(f"option {name}={value!r} must be a finite number")
    if number < minimum or (number == minimum and not allow_equal):
        raise InvalidURL(f"option {name}={value!r} must be greater than {minimum:g}")
    return number
