"""TLS on etcd, PostgreSQL, MySQL/MariaDB and memcached, against real servers
that speak it with the test certificates of tests/certs.py (the TLS kinds of
tests/servers.py, started once per test process, each with a twin that presents a
certificate naming another host).

For each backend: moot works end to end over TLS (a lock held, a watch
firing); the server's certificate is verified by default (the test authority
is not trusted unless ca_cert names it), an other authority or a certificate
naming another host is refused with TLSFailed; verify=false connects and
logs a warning; a server that requires a client certificate takes the one
given by cert/key and refuses a client without one with a typed error;
tls=true never falls back to plain TCP; and every bad TLS option fails with
InvalidURL before any I/O. redis's TLS (rediss://, Sentinel) is tested in
tests/test_redis_backend.py.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

import moot
from moot.backends.base import Backend
from moot.coordinator import _load_backend
from moot.errors import AuthenticationFailed, ConnectionLost, InvalidURL, MootError, TLSFailed
from moot.url import parse_url
from tests import servers
from tests.certs import Certificates
from tests.conftest import MakeBackend
from tests.waiting import wait_event

KINDS = ["etcd", "postgresql", "mysql", "memcached"]
TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class TlsServers:
    """The TLS servers of one backend and how to name them in a URL."""

    kind: str
    base: str        #: the server's URL without its query (as the run's shared user)
    wrong_host: str  #: base URL of the twin whose certificate names only elsewhere.invalid
    made: Certificates

    @property
    def requires_client_cert(self) -> bool:
        """etcd and memcached require one of every client (a server-wide setting)."""
        return self.kind in ("etcd", "memcached")

    def url(self, base: str | None = None, *, client_cert: bool | None = None, **options: str) -> str:
        """``base`` (default: the server's) over TLS with ``options``, plus the
        client certificate where the server requires one (``client_cert``
        overrides)."""
        query = {} if (base or self.base).startswith("etcd3+https") else {"tls": "true"}
        query.update(options)
        if client_cert if client_cert is not None else self.requires_client_cert:
            query.update(cert=str(self.made.client_cert), key=str(self.made.client_key))
        return f"{base or self.base}?" + "&".join(f"{name}={value}" for name, value in query.items())

    @property
    def client_cert_user(self) -> str:
        """Base URL of a user (or the server) that must show a client certificate."""
        return {"postgresql": self.base.replace("postgres@", "moot-client@"),
                "mysql": self.base.replace("root@", "moot_x509@")}.get(self.kind, self.base)


_started: dict[str, TlsServers] = {}


@pytest.fixture(params=KINDS)
def tls(request: pytest.FixtureRequest) -> TlsServers:
    """The TLS servers of the backend under test (started on first use, in parallel with their twin)."""
    kind = str(request.param)
    if kind not in _started:
        urls = servers.start([f"{kind}_tls", f"{kind}_tls_wrong_host"])
        _started[kind] = TlsServers(kind, urls[f"{kind}_tls"].split("?", 1)[0],
                                    urls[f"{kind}_tls_wrong_host"].split("?", 1)[0], servers.tls_certificates())
    return _started[kind]


@pytest.fixture
def make(open_backend: MakeBackend) -> Callable[[str], Backend]:
    """``make(url)``: a connected backend, closed after the test."""
    return lambda url: open_backend(url, timeout=TIMEOUT)


@pytest.fixture
def coordinators() -> Iterator[Callable[[str], moot.Coordinator]]:
    opened: list[moot.Coordinator] = []
    namespace = f"t-{uuid.uuid4().hex[:12]}"

    def connect(url: str) -> moot.Coordinator:
        coord = moot.connect(url, namespace=namespace, ttl=5, timeout=TIMEOUT)
        opened.append(coord)
        return coord

    yield connect
    for coord in opened:
        coord.close()


def test_a_lock_and_a_watch_over_tls(tls: TlsServers, coordinators: Callable[[str], moot.Coordinator]) -> None:
    url = tls.url(ca_cert=str(tls.made.ca))
    holder, other = coordinators(url), coordinators(url)
    changed = threading.Event()
    other.watch_lock("volume", changed.set)
    lock = holder.lock("volume")
    assert lock.acquire(timeout=TIMEOUT)
    wait_event(changed, what=f"a lock watch over TLS on {tls.kind}")
    info = other.lock_info("volume")
    assert info is not None and info.holder == holder.member_id
    assert not other.lock("volume").acquire(blocking=False)
    changed.clear()
    lock.release()
    wait_event(changed, what=f"a lock watch over TLS on {tls.kind} (release)")
    assert other.lock_info("volume") is None


def test_verified_by_default(tls: TlsServers, make: Callable[[str], Backend]) -> None:
    """Without ca_cert the system's authorities are trusted, and the test's is not one of them."""
    with pytest.raises(TLSFailed, match="ca_cert"):
        make(tls.url())


def test_another_authority_is_refused(tls: TlsServers, make: Callable[[str], Backend]) -> None:
    with pytest.raises(TLSFailed, match="ca_cert"):
        make(tls.url(ca_cert=str(tls.made.other_ca)))


def test_a_certificate_naming_another_host_is_refused(tls: TlsServers, make: Callable[[str], Backend]) -> None:
    with pytest.raises(TLSFailed, match=r"mismatch|does not match"):
        make(tls.url(tls.wrong_host, ca_cert=str(tls.made.ca), client_cert=False))


def test_verify_false_connects_and_warns(tls: TlsServers, make: Callable[[str], Backend],
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="moot.backends.tls"):
        backend = make(tls.url(verify="false"))  # the test authority is not trusted: nothing is checked
    assert tls.kind in backend.ping()
    assert [r for r in caplog.records if "verify=false" in r.getMessage() and r.levelname == "WARNING"]


def test_a_client_certificate(tls: TlsServers, make: Callable[[str], Backend]) -> None:
    """A server (etcd, memcached) or a user (PostgreSQL clientcert=verify-full,
    MariaDB REQUIRE X509) that requires a client certificate takes the one
    given by cert and key, and refuses a client without one with a typed,
    non-retryable error."""
    ca = str(tls.made.ca)
    assert tls.kind in make(tls.url(tls.client_cert_user, ca_cert=ca, client_cert=True)).ping()
    # MariaDB refuses such a user as it refuses a wrong password: the message says what else it may be.
    refused: tuple[type[MootError], str] = (AuthenticationFailed, "REQUIRE X509.*cert= and key=") \
        if tls.kind == "mysql" else (TLSFailed, "cert")
    with pytest.raises(refused[0], match=refused[1]):
        make(tls.url(tls.client_cert_user, ca_cert=ca, client_cert=False))


def test_tls_never_falls_back_to_plain_tcp(tls: TlsServers, server: Callable[[str], str],
                                           make: Callable[[str], Backend]) -> None:
    """tls=true against the run's plain server of the kind fails, and says
    TLS is the cause where the server's answer shows it: TLSFailed. etcd's
    plain port closes on a TLS hello without a word (an EOF, or a reset
    when the close races the rest of the hello), which a network drop does
    too: a retryable ConnectionLost, never a plain connection."""
    plain = server(tls.kind).split("?", 1)[0]
    base = plain.replace("etcd://", "etcd3+https://")
    expected: tuple[type[MootError], str] = \
        (ConnectionLost, "EOF|reset by peer") if tls.kind == "etcd" else (TLSFailed, "TLS")
    with pytest.raises(expected[0], match=expected[1]):
        make(tls.url(base, ca_cert=str(tls.made.ca), client_cert=False))


_SCHEMES = {"etcd": "etcd3+https", "postgresql": "postgresql", "mysql": "mysql", "memcached": "memcached"}
_ALIAS_OF_CA = {"etcd": None, "postgresql": "sslrootcert", "mysql": "ssl_ca", "memcached": None}
_ALIAS_OF_CERT = {"etcd": "cert_cert", "postgresql": "sslcert", "mysql": "ssl_cert", "memcached": None}
_BAD_QUERIES = [
    "tls=treu", "tls=2", "tls=", "tls=enable", "verify=maybe", "verify=", "verify=no-thanks",
    "tls=true&key=/etc/hostname",  # a key without its certificate
    "tls=true&ca_cert=/nonexistent/ca.pem", "tls=true&cert=/nonexistent/client.pem",
    "tls=true&ca_cert=/a.pem&{ca}=/b.pem",  # one option under two names
    "tls=true&cert=/a.pem&{cert}=/b.pem",
]


def _bad_options() -> Iterator[tuple[str, str]]:
    for kind in KINDS:
        for query in _BAD_QUERIES:
            ca, cert = _ALIAS_OF_CA[kind], _ALIAS_OF_CERT[kind]
            if ("{ca}" in query and ca is None) or ("{cert}" in query and cert is None):
                continue  # this backend has no alias for it
            if kind == "etcd":
                query = query.replace("tls=true&", "")  # etcd3+https:// implies it
            yield kind, query.format(ca=ca, cert=cert)
        if kind == "etcd":
            yield kind, "tls=false"  # contradicts etcd3+https://
        else:
            yield kind, "ca_cert=/etc/ssl/certs/ca-certificates.crt"  # a TLS option without TLS
            yield kind, "verify=false"


@pytest.mark.parametrize(("kind", "query"), list(_bad_options()))
def test_bad_tls_options_fail_before_any_io(kind: str, query: str) -> None:
    """Made, not connected: the error comes from the options alone (port 1 has no server)."""
    database = {"postgresql": "/postgres", "mysql": "/moot"}.get(kind, "")
    parsed = parse_url(f"{_SCHEMES[kind]}://127.0.0.1:1{database}?{query}")
    with pytest.raises(InvalidURL):
        _load_backend(parsed, dict(parsed.query))


def test_a_query_right_after_the_host_keeps_its_slashes() -> None:
    """host:port?ca_cert=/path (no path before the query): the option is the
    whole path, not cut at its first slash (which once dropped ca_cert)."""
    parsed = parse_url("etcd3+https://127.0.0.1:2379?ca_cert=/etc/moot/ca.pem&cert=/etc/moot/client.pem")
    assert parsed.hosts == (("127.0.0.1", 2379),) and parsed.path == ""
    assert dict(parsed.query) == {"ca_cert": "/etc/moot/ca.pem", "cert": "/etc/moot/client.pem"}
