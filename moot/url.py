"""Backend URLs: parsing, options, and printing them without their secrets.

A URL names the backend (its scheme), where it lives (hosts, path) and options
in its query string (``?ttl=10&namespace=app``). Every URL moot prints goes
through :meth:`BackendURL.redacted`, so a password never reaches a log line,
a repr or an error message.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from moot.errors import InvalidURL, UnknownBackend

#: scheme -> (module path, class name, extra to install, client module to import)
BACKENDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "memory": ("moot.backends.memory", "MemoryBackend", None, None),
    "file": ("moot.backends.file", "FileBackend", None, None),
    "redis": ("moot.backends.redis", "RedisBackend", "redis", None),
    "rediss": ("moot.backends.redis", "RedisBackend", "redis", None),
    "redis+sentinel": ("moot.backends.redis", "RedisBackend", "redis", None),
    "rediss+sentinel": ("moot.backends.redis", "RedisBackend", "redis", None),
    "zookeeper": ("moot.backends.zookeeper", "ZooKeeperBackend", "zookeeper", "kazoo"),
    "kazoo": ("moot.backends.zookeeper", "ZooKeeperBackend", "zookeeper", "kazoo"),
    "etcd": ("moot.backends.etcd", "EtcdBackend", None, None),
    "etcd3+http": ("moot.backends.etcd", "EtcdBackend", None, None),
    "etcd3+https": ("moot.backends.etcd", "EtcdBackend", None, None),
    "postgresql": ("moot.backends.postgresql", "PostgreSQLBackend", "postgresql", "psycopg"),
    "postgres": ("moot.backends.postgresql", "PostgreSQLBackend", "postgresql", "psycopg"),
    "mysql": ("moot.backends.mysql", "MySQLBackend", "mysql", "pymysql"),
    "memcached": ("moot.backends.memcached", "MemcachedBackend", None, None),
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
        """The URL as given, with any password replaced by ``***``: the
        authority's, and the value of every secret option (see :func:`redact`)."""
        return redact(self.raw)

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:  # not the dataclass's: the query may hold a secret option
        return f"BackendURL({self.redacted()!r})"

    def host_port(self, default_port: int, index: int = 0) -> tuple[str, int]:
        """One host of the URL with ``default_port`` filled in."""
        if not self.hosts:
            return ("127.0.0.1", default_port)
        host, port = self.hosts[index]
        return (host or "127.0.0.1", port if port is not None else default_port)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


#: An option whose name matches is a secret: its value is never shown
#: (``sentinel_password``, and any ``password``, ``token`` or ``secret``).
SECRET_OPTION = re.compile(r"pass(word|wd)?|secret|token|credential", re.IGNORECASE)


def redact(url: str) -> str:
    """Return ``url`` with the password of its authority (if any) and the
    value of every secret option (:data:`SECRET_OPTION`) hidden.

    Errs on the side of hiding: everything between the first ``:`` after
    the scheme and the last ``@`` becomes ``***``, so a password that holds
    unescaped ``/``, ``?``, ``#`` or ``@`` (or text that is not a URL at
    all, like ``user:pw@host``) is hidden all the same; so is everything
    after ``name=`` of a secret option up to the next ``&``."""
    head, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(head):
        head, sep, rest = "", "", url
    at = rest.rfind("@")
    colon = rest.find(":", 0, at) if at > 0 else -1
    if colon >= 0:
        rest = f"{rest[:colon + 1]}{_REDACTED}{rest[at:]}"
    base, question, query = rest.partition("?")
    if question:
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(f"{name}={_REDACTED}" if equals and SECRET_OPTION.search(urllib.parse.unquote_plus(name))
                         else name + equals + value for name, equals, value in pairs)
        rest = base + question + query
    return head + sep + rest


def _piece(text: str, url: str, shown: str) -> str:
    """``text`` (a part of ``url``) quoted for a message, unless the URL
    carries a password: the part could then be a piece of it."""
    return repr(text) if shown == url else "(not shown: the URL carries a password)"


def _split_hosts(hostinfo: str, url: str, shown: str) -> tuple[tuple[str, int | None], ...]:
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
                raise InvalidURL(f"bad host {_piece(item, url, shown)} in {shown!r}")
        else:
            host, _, port_text = item.partition(":")
        port: int | None = None
        if port_text:
            # isascii(): str.isdigit() also accepts digits int() refuses ("²")
            if not (port_text.isascii() and port_text.isdigit()) or len(port_text.lstrip("0")) > 5 \
                    or not 0 < int(port_text) < 65536:
                raise InvalidURL(f"bad port {_piece(port_text, url, shown)} in {shown!r}; use a number 1-65535")
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
    if not _SCHEME.fullmatch(scheme):
        raise InvalidURL(f"{shown!r} does not start with a scheme; write scheme://..., e.g. 'file:///tmp/coord' "
                         f"(known schemes: {', '.join(sorted(BACKENDS))})")
    if scheme not in BACKENDS:
        raise UnknownBackend(
            f"unknown backend scheme {scheme!r} in {shown!r}{did_you_mean(scheme, BACKENDS, '://')}; "
            f"known schemes: {', '.join(sorted(BACKENDS))}"
        )
    rest = url.split("://", 1)[1]
    # The authority ends at the first '/' or '?': a query right after it
    # (host:port?ca_cert=/etc/ca.pem) keeps the slashes of its values.
    ends = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
    cut = min(ends) if ends else len(rest)
    authority = rest[:cut]
    path, _, query_text = rest[cut:].partition("?")
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
            raise InvalidURL(f"option {_piece(key, url, shown)} given twice in {shown!r}")
        query[key] = value
    return BackendURL(
        scheme=scheme,
        hosts=_split_hosts(hostinfo, url, shown),
        path=urllib.parse.unquote(path),
        username=username,
        password=password,
        query=query,
        raw=url,
    )


def did_you_mean(given: str, known: Iterable[str], suffix: str = "") -> str:
    """``" (did you mean redis://?)"`` for the known word nearest to
    ``given`` (case aside), or "" if none is near enough."""
    choices = {word.lower(): word for word in known}
    near = difflib.get_close_matches(given.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {choices[near[0]]}{suffix}?)" if near else ""


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__} too long to show>"
    return text if len(text) <= 60 else text[:60] + "..."


def option_float(options: Mapping[str, Any], name: str, default: float, *, minimum: float = 0.0,
                 allow_equal: bool = False, maximum: float | None = None) -> float:
    """Read a number option (from a URL query or keyword), with a typed error.

    Accepts a real number or its text (``"10"``, ``"2.5"``: URL queries
    give text); refuses bools, NaN and infinities, values below ``minimum``
    (or equal to it unless ``allow_equal``) and values above ``maximum``.
    Every refusal is :class:`InvalidURL` naming the option and the bound."""
    value = options.get(name, default)
    if isinstance(value, bool | bytes | bytearray | memoryview):  # float() takes them, meaning none
        raise InvalidURL(f"option {name}={_shown(value)} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidURL(f"option {name}={_shown(value)} is not a number") from None
    except OverflowError:
        raise InvalidURL(f"option {name}={_shown(value)} is too large") from None
    if not math.isfinite(number):
        raise InvalidURL(f"option {name}={_shown(value)} must be a finite number")
    if number < minimum or (number == minimum and not allow_equal):
        bound = "at least" if allow_equal else "greater than"
        raise InvalidURL(f"option {name}={_shown(value)} must be {bound} {minimum:g}")
    if maximum is not None and number > maximum:
        raise InvalidURL(f"option {name}={_shown(value)} must be at most {maximum:g}")
    return number


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def option_bool(options: Mapping[str, Any], name: str, default: bool) -> bool:
    """Read a boolean option (from a URL query or keyword), with a typed error.

    Accepts ``True``/``False`` and the texts ``true``/``false``, ``yes``/``no``,
    ``on``/``off``, ``1``/``0`` (in any case, nothing around them); anything
    else, ``"treu"``, ``" true"``, ``2`` or ``""``, raises :class:`InvalidURL`
    naming the option and the accepted values."""
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii():
        text = value.lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise InvalidURL(f"option {name}={_shown(value)} is not a boolean; write one of: true, false, yes, no, on, "
                     f"off, 1, 0")
