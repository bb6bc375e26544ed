"""ZooKeeper security: TLS on the secure client port, digest credentials,
and isolation between tenants by ZooKeeper ACLs.

TLS runs against ZooKeepers started here by tests/servers.py (``zookeeper_tls``
and its wrong-host and client-certificate variants: Netty's secure client
port, no plain port) with the certificates of tests/certs.py. Credentials and
isolation run against the run's shared ZooKeeper, each test in chroots of
its own; the tenants' chroots are set up with zkCli (ZooKeeper's own
``ZooKeeperMain``) fed exactly the lines docs/security.md gives. A missing
ZooKeeper or Java fails these tests; they never skip.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NotEmptyError
from kazoo.security import OPEN_ACL_UNSAFE

import moot
from moot.backends.zookeeper import ZooKeeperBackend
from moot.errors import AuthenticationFailed, InvalidURL, TLSFailed
from moot.url import parse_url
from tests import servers
from tests.certs import Certificates
from tests.waiting import wait_event

TLS_KINDS = ("zookeeper_tls", "zookeeper_tls_wrong_host", "zookeeper_tls_client_auth")
#: a refusal that no retry can fix must come at once, not after the connect timeout
QUICK = 3.0


@pytest.fixture(scope="module")
def tls() -> Iterator[dict[str, str]]:
    """kind -> ``zookeeper://127.0.0.1:PORT`` of each TLS ZooKeeper (started together, stopped after the module)."""
    urls = servers.start(TLS_KINDS)
    try:
        yield {kind: url.split("?", 1)[0] for kind, url in urls.items()}
    finally:
        for cluster in list(servers._running):
            if cluster.kind.name in TLS_KINDS:
                cluster.stop()


@pytest.fixture(scope="module")
def certs() -> Certificates:
    return servers.tls_certificates()


@pytest.fixture
def chroot() -> str:
    return f"/t-{uuid.uuid4().hex[:12]}"


def refused_quickly(error: type[Exception], connect: Callable[[], object], match: str) -> Exception:
    started = time.monotonic()
    with pytest.raises(error, match=match) as caught:
        connect()
    assert time.monotonic() - started < QUICK, f"refused only after {time.monotonic() - started:.1f}s"
    return caught.value


def lock_handover(url: str) -> None:
    """Over ``url``: a lock held by one coordinator and waited for by another
    passes on release (the waiter's watch fires), and a group watch sees a join."""
    with moot.connect(url, ttl=5, timeout=10) as a, moot.connect(url, ttl=5, timeout=10) as b:
        joined = threading.Event()
        b.group("workers").watch(on_join=lambda member: joined.set())
        a.group("workers").join()
        wait_event(joined, what="a group watch to fire over TLS")
        held = a.lock("db")
        assert held.acquire(timeout=5)
        got = threading.Event()

        def wait_for_it() -> None:
            if b.lock("db").acquire(timeout=20):
                got.set()

        waiter = threading.Thread(target=wait_for_it, daemon=True)
        waiter.start()
        info = a.lock_info("db")
        while info is None or len(info.waiters) < 1:  # bounded: the waiter enqueues within a round trip
            assert waiter.is_alive()
            time.sleep(0.01)
            info = a.lock_info("db")
        assert not got.is_set()
        held.release()
        wait_event(got, what="the waiter's watch to fire when the lock is released over TLS")
        waiter.join(5)


# -- TLS ---------------------------------------------------------------------

def test_tls_lock_and_watches(tls: dict[str, str], certs: Certificates, chroot: str) -> None:
    lock_handover(f"{tls['zookeeper_tls']}{chroot}?tls=true&ca_cert={certs.ca}")


def test_tls_checks_the_host_name_the_url_gives(tls: dict[str, str], certs: Certificates, chroot: str) -> None:
    """The certificate names 127.0.0.1 and localhost: both connect; a server
    whose certificate names another host is refused under either name."""
    port = tls["zookeeper_tls"].rsplit(":", 1)[1]
    with moot.connect(f"zookeeper://localhost:{port}{chroot}?tls=true&ca_cert={certs.ca}", timeout=10) as coord:
        assert coord.lock("x").acquire(timeout=5)
    wrong = tls["zookeeper_tls_wrong_host"]
    for url in (f"{wrong}{chroot}", wrong.replace("127.0.0.1", "localhost") + chroot):
        refused_quickly(TLSFailed, functools.partial(moot.connect, f"{url}?tls=true&ca_cert={certs.ca}", timeout=10),
                        match="not valid for|mismatch")


def test_tls_refuses_a_wrong_authority(tls: dict[str, str], certs: Certificates, chroot: str) -> None:
    base = f"{tls['zookeeper_tls']}{chroot}"
    refused_quickly(TLSFailed, lambda: moot.connect(f"{base}?tls=true&ca_cert={certs.other_ca}", timeout=10),
                    match="ca_cert")
    # verified by default: without ca_cert only the system's authorities are trusted
    refused_quickly(TLSFailed, lambda: moot.connect(f"{base}?tls=true", timeout=10), match="ca_cert")
    backend = ZooKeeperBackend(parse_url(f"{base}?tls=true&ca_cert={certs.other_ca}"),
                               {"tls": "true", "ca_cert": str(certs.other_ca)})
    try:
        refused_quickly(TLSFailed, lambda: backend.connect(10.0), match="certificate")
    finally:
        backend.close()


def test_tls_verify_false_connects_and_warns(tls: dict[str, str], chroot: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """verify=false: neither the authority nor the host name is checked, and a warning says so."""
    url = f"{tls['zookeeper_tls_wrong_host']}{chroot}?tls=true&verify=false"
    with caplog.at_level(logging.WARNING, logger="moot.backends.tls"), moot.connect(url, timeout=10) as coord:
        assert coord.lock("x").acquire(timeout=5)
    assert "does not verify the server's certificate" in caplog.text


def test_tls_client_certificate(tls: dict[str, str], certs: Certificates, chroot: str) -> None:
    """A server that requires client certificates (ssl.clientAuth=need) takes
    cert/key, and refuses a client without one with TLSFailed at once."""
    base = f"{tls['zookeeper_tls_client_auth']}{chroot}?tls=true&ca_cert={certs.ca}"
    lock_handover(f"{base}&cert={certs.client_cert}&key={certs.client_key}")
    refused_quickly(TLSFailed, lambda: moot.connect(base, timeout=10), match="client certificate")


def test_plain_client_on_the_tls_port_gets_no_session(tls: dict[str, str], chroot: str) -> None:
    """The secure port speaks TLS only: a plain client is never served (the
    server closes the connection; nothing tells it from a server not yet
    serving, so this is ConnectionLost after the timeout, not TLSFailed)."""
    with pytest.raises(moot.ConnectionLost):
        moot.connect(f"{tls['zookeeper_tls']}{chroot}", timeout=1)


@pytest.mark.parametrize("query", [
    "tls=treu", "tls=true&verify=maybe", "ca_cert=/tmp/ca.pem", "tls=true&key=/tmp/client.key",
    "tls=true&ca_cert=/nonexistent/ca.pem", "tls=true&ssl_ca_certs=/tmp/ca.pem",
])
def test_bad_tls_options_fail_before_any_io(query: str) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidURL):
        moot.connect(f"zookeeper://192.0.2.1:2181/x?{query}", timeout=10)  # TEST-NET: nothing answers there
    assert time.monotonic() - started < 1.0


# -- credentials ---------------------------------------------------------------

def zkcli(hostport: str, lines: str) -> str:
    """Feed ``lines`` to ZooKeeper's own command-line client (zkCli.sh runs
    this class); its output."""
    jars = ":".join([*servers.ZooKeeper.jars, "/usr/share/java/jline.jar"])
    done = subprocess.run(["java", "-cp", jars, "org.apache.zookeeper.ZooKeeperMain", "-server", hostport],
                          input=lines.encode(), capture_output=True, timeout=60, check=True)
    return done.stdout.decode(errors="replace")


def tenant_setup(chroot: str, user: str, password: str) -> str:
    """The zkCli lines docs/security.md gives to set up one tenant's chroot."""
    return (f"addauth digest {user}:{password}\n"
            f"create {chroot}\n"
            f"create {chroot}/.sessions\n"
            f"setAcl {chroot}/.sessions auth::cdrwa\n"
            f"setAcl {chroot} auth::cdrwa\n"
            "quit\n")


@pytest.fixture(scope="module")
def zk(server: Callable[[str], str]) -> str:
    """``zookeeper://127.0.0.1:PORT`` of the run's shared ZooKeeper."""
    return server("zookeeper").rstrip("/")


def raw_client(zk: str, user: str | None = None, password: str = "") -> KazooClient:
    client = KazooClient(hosts=zk.split("://", 1)[1],
                         auth_data=[("digest", f"{user}:{password}")] if user else None)
    client.start(timeout=10)
    return client


def test_wrong_password_is_refused_at_connect(zk: str, chroot: str) -> None:
    """ZooKeeper takes any digest login (the identity is the user and a hash
    of the password): a wrong password is another identity, refused by the
    chroot's ACLs. moot reads the chroot at connect, so the refusal is
    AuthenticationFailed (not retried) from connect, at once."""
    zkcli(zk.split("://", 1)[1], tenant_setup(chroot, "alice", "right-pw"))
    host = zk.split("://", 1)[1]
    with moot.connect(f"zookeeper://alice:right-pw@{host}{chroot}", timeout=10) as coord:
        assert coord.lock("x").acquire(timeout=5)
    for url in (f"zookeeper://alice:wrong-pw@{host}{chroot}", f"zookeeper://{host}{chroot}"):
        error = refused_quickly(AuthenticationFailed, functools.partial(moot.connect, url, timeout=10),
                                match="denied access")
        assert "wrong-pw" not in str(error) and "right-pw" not in str(error)
        backend = ZooKeeperBackend(parse_url(url), {})
        try:
            refused_quickly(AuthenticationFailed, functools.partial(backend.connect, 10.0), match="denied")
        finally:
            backend.close()


# -- isolation -----------------------------------------------------------------

def snapshot(client: KazooClient, root: str) -> dict[str, tuple[bytes, int, int, list[str]]]:
    """path -> (data, mzxid, ephemeral owner, ACL) of every znode under ``root``."""
    found = {}
    pending = [root]
    while pending:
        path = pending.pop()
        data, stat = client.get(path)
        acl, _ = client.get_acls(path)
        found[path] = (data, stat.mzxid, stat.ephemeralOwner, sorted(str(a) for a in acl))
        pending += [f"{path}/{name}" for name in client.get_children(path)]
    return found


def intrusions(intruder: KazooClient, path: str, deletable: bool) -> dict[str, Callable[[], object]]:
    """What a client may try on another tenant's znode ``path``, by name."""
    attempts: dict[str, Callable[[], object]] = {
        "list": lambda: intruder.get_children(path),
        "read": lambda: intruder.get(path),
        "read ACL": lambda: intruder.get_acls(path),
        "write": lambda: intruder.set(path, b"\x01taken"),
        "enqueue": lambda: intruder.create(f"{path}/", b"", ephemeral=True, sequence=True),
        "create": lambda: intruder.create(f"{path}/intruder", b"\x01"),
        "open the ACL": lambda: intruder.set_acls(path, OPEN_ACL_UNSAFE),
    }
    if deletable:
        attempts["delete"] = lambda: intruder.delete(path, recursive=False)
    return attempts


def test_tenants_cannot_touch_each_other(zk: str) -> None:
    """Tenants A and B on one ZooKeeper, each in a chroot ACL'd to its own
    digest identity (set up as docs/security.md says). A, with its
    credentials, cannot connect moot to B's chroot (AuthenticationFailed),
    and even with a raw client cannot list, read, change, delete, take over
    (enqueue ahead or in place), block (enqueue a waiter, join a group) nor
    expire anything of B's: every request is refused with NoAuth, and B's
    tree and B's lock stay exactly as they were."""
    uid = uuid.uuid4().hex[:8]
    a_root, b_root = f"/tenant-a-{uid}", f"/tenant-b-{uid}"
    hostport = zk.split("://", 1)[1]
    zkcli(hostport, tenant_setup(a_root, "tenant-a", "pw-a"))
    zkcli(hostport, tenant_setup(b_root, "tenant-b", "pw-b"))
    b_url = f"zookeeper://tenant-b:pw-b@{hostport}{b_root}"
    a_on_b = f"zookeeper://tenant-a:pw-a@{hostport}{b_root}"
    with moot.connect(b_url, ttl=10, timeout=10) as b, \
            moot.connect(f"zookeeper://tenant-a:pw-a@{hostport}{a_root}", timeout=10) as a:
        b_lock = b.lock("db")
        assert b_lock.acquire(timeout=5)
        b.group("workers").join()
        before_info = b.lock_info("db")
        before_members = {m.member_id: m.joined_at for m in b.group("workers").members().values()}
        assert a.lock("db").acquire(timeout=5)  # A's own "db", in A's chroot: no interference either way

        refused_quickly(AuthenticationFailed, lambda: moot.connect(a_on_b, timeout=10), match="tenant-a")

        as_b = raw_client(zk, "tenant-b", "pw-b")
        as_a = raw_client(zk, "tenant-a", "pw-a")
        anyone = raw_client(zk)
        try:
            tree = snapshot(as_b, b_root)
            assert any("/locks" in p or "lock" in p for p in tree) and len(tree) > 4, tree
            for intruder in (as_a, anyone):
                for path in tree:
                    for what, attempt in intrusions(intruder, path, deletable=path != b_root).items():
                        with pytest.raises(NoAuthError):
                            attempt()
                            pytest.fail(f"{what} {path} was allowed")
            # B's chroot hangs under "/", where anyone may delete: what keeps it
            # is that it is never empty (its .sessions is made at setup).
            with pytest.raises(NotEmptyError):
                as_a.delete(b_root)
            # What ACLs do not hide: exists() is not checked, so a name guessed
            # right tells that the znode exists and its stat (owner session, times).
            assert as_a.exists(b_root + "/.sessions") is not None
            after = snapshot(as_b, b_root)
        finally:
            for client in (as_a, as_b, anyone):
                client.stop()
                client.close()
        assert after == tree
        assert b.lock_info("db") == before_info
        assert {m.member_id: m.joined_at for m in b.group("workers").members().values()} == before_members
        assert b_lock.is_held
        b_lock.release()
        assert b.lock("db").acquire(timeout=5)

