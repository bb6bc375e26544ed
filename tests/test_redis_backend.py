"""What the Redis backend guarantees beyond the conformance suite: one
command per heartbeat whatever the session holds, one script call per lock
acquire and per release, ephemeral entries that die with their session's key
(and wake watchers when it expires, with no write), counters that outlive
everything, one pub/sub connection and one listener thread per backend, the
hash-slot layout, recovery from a dropped pub/sub connection and from a
server restart, ACL users, and TLS (``rediss://``).

The server is ``$MOOT_TEST_REDIS_URL`` if set, else one started by
``tests/servers.py`` (a missing redis-server fails these tests; they never
skip). Tests that restart a server or need TLS start their own.
"""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import moot
from moot.backends.redis import RedisBackend, dir_key
from moot.errors import AuthenticationFailed, ConnectionLost, InvalidURL, SessionExpired, TLSFailed
from moot.url import BACKENDS, parse_url
from tests import servers
from tests.certs import Certificates
from tests.conftest import MakeBackend
from tests.waiting import wait_event, wait_until

TTL = 1.0

Make = Callable[..., RedisBackend]


@pytest.fixture(scope="module")
def redis_url(server: Callable[[str], str]) -> str:
    """The run's shared redis server (``MOOT_TEST_REDIS_URL`` if set)."""
    return server("redis")


@pytest.fixture
def make(redis_url: str, open_backend: MakeBackend) -> Make:
    """``make(url=redis_url, **options)``: a connected backend, closed after the test."""
    return lambda url=redis_url, **options: open_backend(url, timeout=5.0, **options)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}/lock/x/q/"


def pubsub_port(backend: RedisBackend) -> int:
    assert backend._listener is not None
    sock = backend._listener._sock
    assert sock is not None
    port: int = sock.getsockname()[1]
    return port


def command_ports(backend: RedisBackend) -> set[str]:
    """Client ports of the backend's command connections (not its pub/sub one)."""
    assert backend._pool is not None
    return {str(sock.getsockname()[1]) for sock in backend._pool.sockets()}


def commands_during(url: str, action: Callable[[], object], backend: RedisBackend) -> list[str]:
    """Names of the commands ``backend`` sent over its command connections
    while ``action`` ran (seen by MONITOR), not counting those run inside scripts."""
    marker = f"moot-test-end-{uuid.uuid4().hex}"
    lines: list[dict[str, Any]] = []
    client, marking = redis.Redis.from_url(url), redis.Redis.from_url(url)
    marking.ping()  # connected (handshake done) before MONITOR starts
    with client.monitor() as monitor:
        action()
        marking.echo(marker)
        while marker not in (line := monitor.next_command())["command"]:
            lines.append(line)
    client.close()
    marking.close()
    ports = command_ports(backend)
    return [line["command"].split(" ", 1)[0].upper() for line in lines
            if line["client_type"] == "tcp" and line["client_port"] in ports]


# -- round trips ----------------------------------------------------------------
def test_enqueue_and_delete_are_one_script_call_each(make: Make, redis_url: str, prefix: str) -> None:
    backend = make()
    backend.open_session(30)
    first = backend.enqueue(prefix, b"warm up")[0]  # loads the scripts
    backend.delete(first.key)
    result: list[Any] = []
    assert commands_during(redis_url, lambda: result.append(backend.enqueue(prefix, b"v")), backend) == ["EVALSHA"]
    mine, queue = result[0]
    assert first.seq is not None and mine.seq is not None and mine.seq > first.seq
    assert queue == [mine] and mine.key == f"{prefix}{mine.seq:020d}"
    assert commands_during(redis_url, lambda: backend.delete(mine.key), backend) == ["EVALSHA"]


def test_uncontended_lock_acquire_and_release_are_one_round_trip_each(redis_url: str) -> None:
    with moot.connect(redis_url, member_id="solo", ttl=60, namespace=uuid.uuid4().hex) as coord:
        lock = coord.lock("volume-42")
        lock.acquire()
        first = lock.token
        lock.release()
        quiet = coord.backend
        assert isinstance(quiet, RedisBackend)
        assert commands_during(redis_url, lock.acquire, quiet) == ["EVALSHA"]
        assert first is not None and lock.token is not None and lock.token > first
        assert commands_during(redis_url, lock.release, quiet) == ["EVALSHA"]


def test_heartbeat_is_one_command_however_many_keys(make: Make, redis_url: str, prefix: str) -> None:
    backend, ttl = make(), 2.0
    session = backend.open_session(ttl)
    base = prefix.removesuffix("q/")
    for i in range(100):
        assert backend.create(f"{base}m/{i}", b"x", ephemeral=True) is not None
    for _ in range(10):
        backend.enqueue(prefix, b"")
    assert commands_during(redis_url, backend.refresh_session, backend) == ["PEXPIRE"]
    end = time.monotonic() + 2 * ttl  # outlive the TTL on refreshes alone
    while time.monotonic() < end:
        backend.refresh_session()
        time.sleep(ttl / 4)
    assert len(backend.list(base)) == 110
    assert backend.session_last_seen(session) is not None
    wait_until(lambda: not backend.list(base), what="the keys to die with the unrefreshed session")
    assert backend.session_last_seen(session) is None
    with pytest.raises(SessionExpired):
        backend.refresh_session()
    with pytest.raises(SessionExpired):
        backend.enqueue(prefix, b"")


# -- layout -----------------------------------------------------------------------
def test_every_key_of_a_lock_or_group_shares_a_hash_slot(redis_url: str, raw: redis.Redis) -> None:
    namespace = uuid.uuid4().hex
    with moot.connect(redis_url, member_id="m", ttl=30, namespace=namespace) as coord, coord.lock("a/b"):
        group = coord.group("g")
        group.join(capabilities={"x": 1})
        keys = [k.decode() for k in raw.scan_iter(match=f"moot:{{{namespace}/*")]
        lock_keys = [k for k in keys if "/lock/" in k]
        group_keys = [k for k in keys if "/group/" in k]
        assert lock_keys and group_keys
        assert len({key_slot(k.encode()) for k in lock_keys}) == 1
        assert len({key_slot(k.encode()) for k in group_keys}) == 1
        assert group_keys == [k for k in group_keys if k.startswith(f"moot:{{{namespace}/group/g}}")]
    assert dir_key("ns/lock/x/q/") == "moot:{ns/lock/x}/q/"
    assert dir_key("ns/lock/") == "moot:{ns/lock}/"
    assert dir_key("") == "moot:{}"


# -- liveness and watches --------------------------------------------------------
def test_dead_entries_read_as_absent_and_are_removed(make: Make, raw: redis.Redis, prefix: str) -> None:
    owner, reader = make(), make()
    owner.open_session(TTL)  # never refreshed
    entry, _ = owner.enqueue(prefix, b"")
    wait_until(lambda: reader.get(entry.key) is None, what="the entry to die with its session")
    assert raw.hget(dir_key(prefix), entry.key.rsplit("/", 1)[1]) is None
    assert reader.list(prefix) == []


@pytest.mark.parametrize("version", [None, "its own", "another"])
def test_delete_of_an_entry_whose_owner_is_gone_answers_false_and_removes_it(
        make: Make, raw: redis.Redis, prefix: str, version: str | None) -> None:
    """The delete script tells a live owner by its session's index of keys,
    not by the session's TTL; an owner whose session key expired (entries
    are left behind, unlike a closed session's) must still read as gone."""
    owner, other = make(), make()
    session = owner.open_session(60)
    kept = owner.create(f"{prefix}kept", b"", ephemeral=True)
    entry, _ = owner.enqueue(prefix, b"")
    assert kept is not None and other.delete(kept.key) is True  # a live owner's entry: deleted, True
    index = set(raw.hkeys(f"moot:s:{session}"))
    assert entry.key.encode() in index and kept.key.encode() not in index
    raw.delete(f"moot:s:{session}")  # as its expiry does: the entries stay behind
    leaf = entry.key.rsplit("/", 1)[1]
    assert raw.hget(dir_key(prefix), leaf) is not None
    asked = {None: None, "its own": entry.version, "another": entry.version + 1}[version]
    assert other.delete(entry.key, asked) is False
    assert raw.hget(dir_key(prefix), leaf) is None
    assert other.get(entry.key) is None

def test_eviction_tells_the_owner_at_once(make: Make, prefix: str) -> None:
    owner, admin = make(), make()
    lost = threading.Event()
    owner.set_session_listener(lost.set)
    session = owner.open_session(30)
    entry, _ = owner.enqueue(prefix, b"")
    gone = threading.Event()
    admin.watch(entry.key, gone.set)
    assert admin.expire_session(session) is True
    wait_event(gone, timeout=2.0, what="the waiter to see the evicted entry go (at once, not after the 30 s TTL)")
    wait_event(lost, timeout=2.0, what="the owner's session listener (no heartbeat involved)")
    assert admin.expire_session(session) is False
    assert admin.get(entry.key) is None
    with pytest.raises(SessionExpired):
        owner.refresh_session()


def test_own_session_expiry_is_noticed_without_a_refresh(make: Make, prefix: str) -> None:
    owner = make()
    lost, mine = threading.Event(), threading.Event()
    owner.set_session_listener(lost.set)
    owner.open_session(TTL)
    entry, _ = owner.enqueue(prefix, b"")
    owner.watch(entry.key, mine.set)
    wait_event(lost, what="the session listener when the unrefreshed session expires")
    wait_event(mine, what="the holder's watch on its own entry")


def test_one_pubsub_connection_and_listener_thread_for_all_watches(
    make: Make, raw: redis.Redis, prefix: str
) -> None:
    backend = make()
    backend.open_session(30)
    before = threading.active_count()
    fired: list[int] = []
    watches = [backend.watch(f"{prefix}{i}", functools.partial(fired.append, i)) for i in range(20)]
    assert threading.active_count() == before
    port = pubsub_port(backend)
    mine = [c for c in raw.client_list(_type="pubsub") if c["addr"].endswith(f":{port}")]
    assert len(mine) == 1 and int(mine[0]["sub"]) == 21  # 20 keys + the session's notices
    backend.create(f"{prefix}7", b"")
    wait_until(lambda: 7 in fired, what="the watch on key 7")
    for watch in watches:
        watch.cancel()
        watch.cancel()
    wait_until(lambda: any(int(c["sub"]) == 1 for c in raw.client_list(_type="pubsub")
                           if c["addr"].endswith(f":{port}")), what="the unsubscriptions")
    assert set(fired) == {7}


def test_a_channel_watched_again_before_its_batched_unsubscribe_stays_subscribed(
    make: Make, raw: redis.Redis, prefix: str
) -> None:
    """Unwatched channels are unsubscribed in batches (listener._UNSUBSCRIBE_DELAY):
    a watch made on the same channel meanwhile must not be unsubscribed with them."""
    backend, writer = make(), make()
    backend.open_session(30)
    port = pubsub_port(backend)

    def subscriptions() -> int:
        return sum(int(c["sub"]) for c in raw.client_list(_type="pubsub") if c["addr"].endswith(f":{port}"))

    backend.watch(f"{prefix}k", lambda: None).cancel()
    backend.watch(f"{prefix}other", lambda: None).cancel()
    fired = threading.Event()
    backend.watch(f"{prefix}k", fired.set)
    wait_until(lambda: subscriptions() == 2, what="the batched unsubscription of the other key alone")
    assert writer.create(f"{prefix}k", b"") is not None
    wait_event(fired, what="the watch made again on a channel due to be unsubscribed")


def test_watches_survive_a_dropped_pubsub_connection(make: Make, raw: redis.Redis, prefix: str) -> None:
    backend, writer = make(), make()
    key = f"{prefix}k"
    fired = threading.Event()
    backend.watch(key, fired.set)
    raw.client_kill_filter(_type="pubsub", addr=f"127.0.0.1:{pubsub_port(backend)}")
    wait_event(fired, what="the resync call, made once re-subscribed")
    fired.clear()
    assert writer.create(key, b"") is not None
    wait_event(fired, what="a notification over the new connection")


# -- errors, URLs, auth, restart, TLS ---------------------------------------------
def test_unreachable_server_is_connection_lost_without_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = RedisBackend(parse_url(f"redis://:s3cret-pw@127.0.0.1:{port}/0"), {})
    with pytest.raises(ConnectionLost) as caught:
        backend.connect(1.0)
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in repr(backend)
    backend.close()


def test_bad_urls_and_options() -> None:
    with pytest.raises(InvalidURL):
        RedisBackend(parse_url("redis://127.0.0.1/notadb"), {})
    with pytest.raises(InvalidURL):
        RedisBackend(parse_url("redis://a:1,b:2/0"), {})
    with pytest.raises(InvalidURL):
        RedisBackend(parse_url("rediss://127.0.0.1/0"), {"ssl_cert_reqs": "sometimes"})


def test_acl_user(make: Make, raw: redis.Redis, redis_url: str, prefix: str) -> None:
    user, password = f"moot-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    documented = ["evalsha", "script", "pexpire", "pttl", "hget", "hset", "hgetall", "hdel", "del", "zadd",
                  "zrangebylex", "publish", "time", "multi", "exec", "select", "subscribe", "unsubscribe", "ping",
                  "info"]  # exactly the module docstring's list
    raw.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["moot:*"], channels=["moot:*"],
                    commands=["-@all", *(f"+{c}" for c in documented)])
    try:
        hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
        backend = make(f"redis://{user}:{password}@{hostport}/0")
        session = backend.open_session(30)
        fired = threading.Event()
        backend.watch(f"{prefix}k", fired.set)  # over the pub/sub connection's own AUTH
        assert backend.create(f"{prefix}k", b"", ephemeral=True) is not None
        wait_event(fired, what="a notification for an ACL user")
        entry, queue = backend.enqueue(prefix, b"")
        assert queue and backend.list(prefix.split("/", 1)[0] + "/")
        current = backend.get(f"{prefix}k")
        assert current is not None and backend.compare_and_set(f"{prefix}k", b"2", current.version) is not None
        backend.refresh_session()
        assert backend.session_last_seen(session) is not None and "redis" in backend.ping()
        assert backend.delete(entry.key)
        backend.close_session()
        with pytest.raises(moot.errors.AuthenticationFailed) as caught:  # a ConfigurationError: not retried
            make(f"redis://{user}:wrong-{password}@{hostport}/0")
        assert password not in str(caught.value)
    finally:
        raw.acl_deluser(user)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OwnServers:
    """redis-server processes of one test (plain, TLS, replica, Sentinel), killed by PID after it."""

    def __init__(self, directory: Path):
        if shutil.which("redis-server") is None:
            raise AssertionError("redis-server is not installed; run scripts/install-deps.sh")
        self.directory = directory
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.argv: dict[int, list[str]] = {}

    def start(self, *args: str, port: int | None = None, tls: bool = False, config: str | None = None) -> int:
        """Start a server on ``port`` (a free one by default); return the port once it accepts."""
        port = free_port() if port is None else port
        argv = ["redis-server"]
        if config is not None:
            path = self.directory / f"{port}.conf"
            path.write_text(config)
            argv.append(str(path))
        argv += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if tls:
            made = self.certificates()
            argv += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(made.server_cert),
                     "--tls-key-file", str(made.server_key), "--tls-ca-cert-file", str(made.ca),
                     "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(port)]
        self.argv[port] = argv + list(args)
        self.restart(port)
        return port

    def restart(self, port: int) -> None:
        with open(self.directory / f"{port}.log", "ab") as log:
            self.processes[port] = subprocess.Popen(self.argv[port], cwd=self.directory, stdout=log, stderr=log)

        def accepts() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(accepts, what=f"the test's redis-server on port {port}")

    def kill(self, port: int) -> None:
        process = self.processes[port]
        if process.poll() is None:
            process.kill()
        process.wait()

    def kill_all(self) -> None:
        for port in self.processes:
            self.kill(port)

    def certificates(self) -> Certificates:
        """The run's test certificates (made once: tests/servers.py's)."""
        return servers.tls_certificates()


@pytest.fixture
def own(tmp_path: Path) -> Iterator[OwnServers]:
    servers_of_test = OwnServers(tmp_path)
    yield servers_of_test
    servers_of_test.kill_all()


def test_server_restart(own: OwnServers, make: Make) -> None:
    port = own.start()
    url = f"redis://127.0.0.1:{port}/0"
    backend, writer = make(url), make(url)
    lost = threading.Event()
    backend.set_session_listener(lost.set)
    backend.open_session(30)
    fired = threading.Event()
    backend.watch("ns/group/g/members/", fired.set)
    own.kill(port)
    with pytest.raises(ConnectionLost):
        backend.refresh_session()
    own.restart(port)  # empty: the session is gone with the data
    wait_event(fired, what="the resync call, made once re-subscribed")
    wait_event(lost, what="the session listener: the session died with the server")
    with pytest.raises(SessionExpired):
        backend.refresh_session()
    backend.close_session()
    backend.open_session(30)
    fired.clear()
    assert writer.create("ns/group/g/members/m", b"") is not None
    wait_event(fired, what="a notification after the restart")


def test_tls(own: OwnServers, make: Make) -> None:
    port = own.start(tls=True)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={own.certificates().ca}"
    a, b = make(url), make(url)
    a.open_session(TTL)
    b.open_session(30)
    assert "redis" in a.ping()
    entry, queue = a.enqueue("ns/lock/x/q/", b"")
    assert queue == [entry]
    gone = threading.Event()
    b.watch(entry.key, gone.set)
    wait_event(gone, what="a TLS watch to fire at the owner's expiry")
    with pytest.raises(TLSFailed, match="certificate"):
        make(url.split("?", 1)[0])  # the test CA is not trusted by default


def test_tls_refuses_a_wrong_authority_or_host_name(own: OwnServers, make: Make) -> None:
    port = own.start(tls=True)
    made = own.certificates()
    with pytest.raises(TLSFailed, match="ca_cert"):
        make(f"rediss://127.0.0.1:{port}/0?ca_cert={made.other_ca}")
    wrong_host = own.start("--tls-cert-file", str(made.wrong_host_cert), "--tls-key-file",
                           str(made.wrong_host_key), tls=True)
    with pytest.raises(TLSFailed, match=r"127\.0\.0\.1"):
        make(f"rediss://127.0.0.1:{wrong_host}/0?ca_cert={made.ca}")


def test_tls_vocabulary(own: OwnServers, make: Make, caplog: pytest.LogCaptureFixture) -> None:
    """The shared TLS options (tls, ca_cert, verify) and redis's old spellings
    as aliases; verify=false connects to an untrusted server and warns."""
    port = own.start(tls=True)
    ca = own.certificates().ca
    for url in (f"redis://127.0.0.1:{port}/0?tls=true&ca_cert={ca}", f"rediss://127.0.0.1:{port}/0?ca_cert={ca}",
                f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"):
        assert "redis" in make(url).ping(), url
    with caplog.at_level("WARNING", logger="moot.backends.tls"):
        assert "redis" in make(f"rediss://127.0.0.1:{port}/0?verify=false").ping()
    assert any("verify=false" in record.getMessage() for record in caplog.records)
    assert "redis" in make(f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none").ping()
    caplog.clear()
    with caplog.at_level("WARNING", logger="moot.backends.tls"):
        assert "redis" in make(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=optional").ping()
    assert any("names its host" in record.getMessage() for record in caplog.records)
    with pytest.raises(TLSFailed):
        make(f"redis://127.0.0.1:{port}/0?tls=1")  # verified by default: the test CA is not trusted
    with pytest.raises(TLSFailed):
        make(f"rediss://127.0.0.1:{port}/0?verify=yes")


@pytest.mark.parametrize("query", [
    "rediss://127.0.0.1/0?tls=treu", "rediss://127.0.0.1/0?verify=maybe", "rediss://127.0.0.1/0?verify=",
    "redis://127.0.0.1/0?tls=2", "redis://127.0.0.1/0?ca_cert=/tmp/ca.pem",  # a TLS option without TLS
    "redis://127.0.0.1/0?ssl_ca_certs=/tmp/ca.pem", "rediss://127.0.0.1/0?tls=false",
    "rediss://127.0.0.1/0?ca_cert=/a.pem&ssl_ca_certs=/b.pem",  # one option under two names
    "rediss://127.0.0.1/0?key=/nonexistent/client.key",  # a key without its certificate
    "rediss://127.0.0.1/0?ca_cert=/nonexistent/ca.pem", "rediss://127.0.0.1/0?ssl_cert_reqs=sometimes",
    "rediss+sentinel://127.0.0.1/svc/0?tls=false", "rediss+sentinel://127.0.0.1/svc/0?tls=treu",
    "redis+sentinel://127.0.0.1/svc/0?tls=on-ish", "redis+sentinel://127.0.0.1/svc/0?ca_cert=/tmp/ca.pem",
    "rediss+sentinel://127.0.0.1/svc/0?verify=", "rediss+sentinel://127.0.0.1/svc/0?key=/nonexistent/client.key",
])
def test_bad_tls_options_fail_before_any_io(query: str) -> None:
    parsed = parse_url(query)
    with pytest.raises(InvalidURL):
        RedisBackend(parsed, dict(parsed.query))


def tls_sentinel(own: OwnServers, *args: str) -> tuple[int, int]:
    """A primary and a Sentinel watching it, both on TLS ports only and both
    requiring a client certificate signed by the test authority (the Sentinel
    shows its own server certificate to the primary); ``args`` go to the
    Sentinel. Returns their ports."""
    made = own.certificates()
    primary = own.start("--tls-auth-clients", "yes", tls=True)
    sentinel = own.start("--sentinel", "--tls-auth-clients", "yes", *args, tls=True, config=(
        f"sentinel monitor svc 127.0.0.1 {primary} 1\ntls-replication yes\n"
        f"tls-client-cert-file {made.server_cert}\ntls-client-key-file {made.server_key}\n"))
    return primary, sentinel


def test_sentinel_over_tls(own: OwnServers, make: Make) -> None:
    """rediss+sentinel:// (and redis+sentinel://...?tls=true) speaks TLS to the
    Sentinels and to the primary they name: here both listen on TLS ports
    only and want a client certificate, so every connection moot makes (the
    commands', the watches', the failover listener's) is TLS with it."""
    primary, sentinel = tls_sentinel(own)
    made = own.certificates()
    client = f"ca_cert={made.ca}&cert={made.client_cert}&key={made.client_key}"
    a = make(f"rediss+sentinel://127.0.0.1:{sentinel}/svc/0?{client}")
    b = make(f"redis+sentinel://127.0.0.1:{sentinel}/svc/0?tls=true&{client}")
    assert f":{primary} " in a.ping() and b._switches is not None
    a.open_session(TTL)
    b.open_session(30)
    entry, queue = a.enqueue("ns/lock/x/q/", b"")
    assert queue == [entry]
    gone = threading.Event()
    b.watch(entry.key, gone.set)
    wait_event(gone, what="a watch through a TLS Sentinel to fire at the owner's expiry")
    with pytest.raises(TLSFailed, match="cert"):  # the Sentinel wants a client certificate
        make(f"rediss+sentinel://127.0.0.1:{sentinel}/svc/0?ca_cert={made.ca}")


def test_sentinel_tls_refusals(own: OwnServers, make: Make, caplog: pytest.LogCaptureFixture) -> None:
    """The Sentinel's certificate is verified by default: an untrusted
    authority or a certificate naming another host is TLSFailed (the
    Sentinel is the first thing moot dials); verify=false connects and warns."""
    made = own.certificates()
    _, sentinel = tls_sentinel(own)
    client = f"cert={made.client_cert}&key={made.client_key}"
    with pytest.raises(TLSFailed, match="ca_cert"):
        make(f"rediss+sentinel://127.0.0.1:{sentinel}/svc/0?{client}")
    with pytest.raises(TLSFailed, match="ca_cert"):
        make(f"rediss+sentinel://127.0.0.1:{sentinel}/svc/0?ca_cert={made.other_ca}&{client}")
    _, wrong_host = tls_sentinel(own, "--tls-cert-file", str(made.wrong_host_cert), "--tls-key-file",
                                 str(made.wrong_host_key))
    with pytest.raises(TLSFailed, match="mismatch"):
        make(f"rediss+sentinel://127.0.0.1:{wrong_host}/svc/0?ca_cert={made.ca}&{client}")
    with caplog.at_level("WARNING", logger="moot.backends.tls"):
        assert "Sentinel" in make(f"rediss+sentinel://127.0.0.1:{sentinel}/svc/0?verify=false&{client}").ping()
    assert any("verify=false" in record.getMessage() for record in caplog.records)


def test_a_sentinel_that_wants_a_password_the_url_lacks(own: OwnServers, make: Make) -> None:
    primary = own.start()
    sentinel = own.start("--sentinel", config=(
        f"sentinel monitor svc 127.0.0.1 {primary} 1\nrequirepass sentinel-s3cret\n"))
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="sentinel_password"):
        make(f"redis+sentinel://127.0.0.1:{sentinel}/svc/0")
    assert time.monotonic() - started < 3.0, "refused credentials are not retried until the timeout"
    assert make(f"redis+sentinel://127.0.0.1:{sentinel}/svc/0?sentinel_password=sentinel-s3cret").ping()


def test_sentinel_failover(own: OwnServers, make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "redis+sentinel", BACKENDS["redis"])  # until url.py registers it
    primary = own.start("--repl-diskless-sync-delay", "0")
    replica = own.start("--replicaof", "127.0.0.1", str(primary), "--repl-diskless-sync-delay", "0")
    sentinel = own.start("--sentinel", config=(
        f"sentinel monitor svc 127.0.0.1 {primary} 1\n"
        "sentinel down-after-milliseconds svc 1000\nsentinel failover-timeout svc 5000\n"))
    sentinels = redis.Redis(port=sentinel)
    wait_until(lambda: [r.get("master-link-status") for r in sentinels.sentinel_slaves("svc")] == ["ok"],
               what="the sentinel to see the replica in sync")
    url = f"redis+sentinel://127.0.0.1:{sentinel}/svc/0"
    backend, watcher = make(url), make(url)
    assert f":{primary} " in backend.ping()
    backend.open_session(30)
    first, _ = backend.enqueue("ns/lock/x/q/", b"")
    fired = threading.Event()
    watcher.watch("ns/group/g/members/", fired.set)
    wait_until(lambda: redis.Redis(port=primary).execute_command("WAIT", 1, 1000) == 1, what="replication")
    fired.clear()
    sentinels.execute_command("SENTINEL", "FAILOVER", "svc")
    # The backend hears of the switch from Sentinel and leaves the old primary at
    # once (which stays writable until Sentinel demotes it, seconds later): its
    # watches re-subscribe on the new primary and fire once.
    wait_event(fired, what="the watches to move to the new primary")
    assert int(sentinels.sentinel_master("svc")["port"]) == replica
    new_primary = redis.Redis(port=replica)

    def enqueued() -> bool:
        try:
            second, queue = backend.enqueue("ns/lock/x/q/", b"")
        except ConnectionLost:  # a command caught by the switch; the next one goes to the new primary
            return False
        assert first.seq is not None and second.seq is not None and second.seq > first.seq
        assert [e.key for e in queue] == [first.key, second.key]
        assert new_primary.hget(dir_key("ns/lock/x/q/"), second.key.rsplit("/", 1)[1]) is not None
        return True

    wait_until(enqueued, what="an enqueue on the new primary")
    assert f":{replica} " in backend.ping()

    def notified() -> bool:
        fired.clear()
        backend.create(f"ns/group/g/members/{uuid.uuid4().hex}", b"", ephemeral=True)
        return fired.wait(0.5)

    wait_until(notified, what="watches to work after the failover")
