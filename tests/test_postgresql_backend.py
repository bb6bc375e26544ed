"""What the PostgreSQL backend guarantees beyond the conformance suite: the
schema made on first use (by clients racing to make it, and for a role that
may not: the statements to run), names that never collide (no hashing) and
many locks held at once, expired sessions reaped by the client that needs
the key and by watchers at the owner's expiry, watches that survive a lost
LISTEN connection, a server crash and restart, and bad URLs refused before
any I/O.

The server is ``$MOOT_TEST_POSTGRESQL_URL`` if set, else one started by
``tests/servers.py``; the restart test starts its own.
"""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import moot
from moot.backends._support import idle
from moot.backends.postgresql import PostgreSQLBackend, listener, schema
from moot.backends.postgresql.schema import VERSION
from moot.errors import ConnectionLost, InvalidURL, PermissionDenied
from moot.url import parse_url
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import wait_event, wait_until

TTL = 1.0

Make = Callable[..., PostgreSQLBackend]


@pytest.fixture(scope="module")
def pg_url(server: Callable[[str], str]) -> str:
    """The run's shared postgresql server (``MOOT_TEST_POSTGRESQL_URL`` if set)."""
    return server("postgresql")


@pytest.fixture
def admin(pg_url: str) -> Iterator[psycopg.Connection]:
    conn = psycopg.connect(pg_url, autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def make(pg_url: str, open_backend: MakeBackend) -> Make:
    """``make(url=pg_url, ttl=None, **options)``: a connected backend, closed after the test."""
    return lambda url=pg_url, ttl=None, **options: open_backend(url, ttl=ttl, timeout=5.0, **options)


@pytest.fixture
def fresh_schema(admin: psycopg.Connection) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE".encode())


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}/"


def test_schema_is_made_on_first_use_by_clients_racing_to_make_it(
        make: Make, admin: psycopg.Connection, fresh_schema: str, prefix: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda _: make(schema=fresh_schema, ttl=TTL * 10), range(6)))
    assert admin.execute(f"SELECT version FROM {fresh_schema}.meta".encode()).fetchall() == [(VERSION,)]
    entry = made[0].create(f"{prefix}k", b"v", ephemeral=True)
    assert entry is not None and made[5].get(entry.key) == entry
    rows = admin.execute(f"SELECT key, owner FROM {fresh_schema}.entries".encode()).fetchall()
    assert rows == [(entry.key, entry.owner)]


def test_a_role_that_may_not_create_the_schema_is_told_the_statements_to_run(
        pg_url: str, make: Make, admin: psycopg.Connection, fresh_schema: str, prefix: str) -> None:
    role = f"r_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE ROLE {role} LOGIN".encode())
    try:
        restricted = pg_url.replace("postgres@", f"{role}:secret-pw@", 1)
        with pytest.raises(PermissionDenied) as refused:
            make(restricted, schema=fresh_schema)
        message = str(refused.value)
        assert "secret-pw" not in message
        assert f"CREATE SCHEMA IF NOT EXISTS {fresh_schema};" in message and f'TO "{role}";' in message
        script = message[message.index("CREATE SCHEMA IF NOT EXISTS"):message.rindex(";\n") + 1]
        admin.execute(script.encode())  # as the administrator would
        backend = make(restricted, schema=fresh_schema, ttl=TTL * 10)
        entry, queue = backend.enqueue(f"{prefix}q/", b"")
        assert queue == [entry] and backend.delete(entry.key) is True
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {fresh_schema} CASCADE".encode())
        admin.execute(f"DROP ROLE {role}".encode())


def test_a_large_groups_listing_checks_owners_against_one_hashed_set_with_the_same_answer(
        make: Make, admin: psycopg.Connection, fresh_schema: str, prefix: str) -> None:
    lister, owner = make(schema=fresh_schema, ttl=TTL * 10), make(schema=fresh_schema, ttl=TTL * 10)
    directory = f"{prefix}g/"
    live = {f"m{i:03d}" for i in range(70)}
    for name in live:
        assert lister.create(directory + name, b"", ephemeral=True) is not None
    assert lister.create(directory + "kept", b"", ephemeral=False) is not None
    assert lister.create(directory + "sub/x", b"", ephemeral=True) is not None  # not directly under it
    expiring = {f"x{i}" for i in range(5)}
    made = [owner.create(directory + name, b"", ephemeral=True) for name in expiring]
    assert all(entry is not None for entry in made)
    owner_id = made[0].owner  # type: ignore[union-attr]
    admin.execute(f"INSERT INTO {fresh_schema}.entries VALUES (%s, '', 1, NULL, 'vanished')".encode(),
                  (directory + "orphan",))
    expected, before_expiry = sorted(live | {"kept"}), sorted(live | {"kept"} | expiring)
    assert lister.names(directory) == before_expiry  # the probe per entry
    assert directory in lister._hashed_listings  # 76 names, 2 sessions: the next listing hashes them
    plan = admin.execute(b"EXPLAIN " + schema.queries(fresh_schema)["names_hashed"].encode(),
                         (len(directory) + 1, directory, directory[:-1] + "0", len(directory) + 1)).fetchall()
    assert any("hashed SubPlan" in line for (line,) in plan), plan
    assert lister.names(directory) == before_expiry

    # the owner's session expires on the server while the owner (as if paused) does not know it
    admin.execute(f"UPDATE {fresh_schema}.sessions SET expires = clock_timestamp() - interval '1 ms' "
                  "WHERE id = %s".encode(), (owner_id,))
    still = f"SELECT count(*) FROM {fresh_schema}.entries WHERE owner = %s".encode()
    assert lister.names(directory) == expected
    assert directory in lister._hashed_listings
    assert admin.execute(still, (owner_id,)).fetchall() == [(5,)]  # expired, not yet reaped
    assert make(schema=fresh_schema).names(directory) == expected  # a new client: the probe per entry
    assert admin.execute(still, (owner_id,)).fetchall() == [(5,)]
    lister._plan_listing(directory, 76, 229)  # sessions more than 3 names each: the probe again
    assert directory not in lister._hashed_listings


def colliding_names(count: int) -> list[str]:
    """``count`` distinct names with the same 16-bit hash (CRC-32 cut to 16 bits)."""
    by_hash: dict[int, list[str]] = {}
    i = 0
    while True:
        name = f"lock-{i}"
        same = by_hash.setdefault(zlib.crc32(name.encode()) & 0xFFFF, [])
        same.append(name)
        if len(same) == count:
            return same
        i += 1


def test_distinct_names_are_distinct_locks_even_when_a_16_bit_hash_collides(pg_url: str, prefix: str) -> None:
    names = colliding_names(4)
    with moot.connect(pg_url, member_id="a", ttl=TTL * 5, namespace=prefix.rstrip("/")) as a, \
            moot.connect(pg_url, member_id="b", ttl=TTL * 5, namespace=prefix.rstrip("/")) as b:
        held = [(a if i % 2 else b).lock(name) for i, name in enumerate(names)]
        assert all(lock.acquire(blocking=False) for lock in held)
        assert not a.lock(names[1]).acquire(blocking=False)  # the same name is the same lock
        for lock in held:
            lock.release()


def test_one_coordinator_holds_a_thousand_locks_at_once(pg_url: str, prefix: str) -> None:
    started = time.monotonic()
    with moot.connect(pg_url, member_id="many", ttl=5.0, namespace=prefix.rstrip("/")) as coord, \
            moot.connect(pg_url, member_id="other", ttl=5.0, namespace=prefix.rstrip("/")) as other:
        locks = [coord.lock(f"l{i}") for i in range(1000)]
        assert all(lock.acquire(blocking=False) for lock in locks)
        assert not other.lock("l999").acquire(blocking=False)
        for lock in locks:
            lock.release()
        assert other.lock("l999").acquire(blocking=False)
    assert time.monotonic() - started < 10.0


def test_an_expired_owner_is_reaped_by_the_client_that_needs_its_key(
        make: Make, admin: psycopg.Connection, prefix: str) -> None:
    owner, other = make(ttl=TTL), make(ttl=TTL * 10)
    mine = owner.create(f"{prefix}k", b"", ephemeral=True)
    kept = owner.create(f"{prefix}other", b"", ephemeral=True)
    assert mine is not None and kept is not None
    wait_until(lambda: other.get(mine.key) is None, what="the unrefreshed owner to expire")
    made = other.create(mine.key, b"new", ephemeral=True)
    assert made is not None and made.owner != mine.owner
    assert admin.execute(b"SELECT count(*) FROM moot.sessions WHERE id = %s", (mine.owner,)).fetchall() == [(0,)]
    assert admin.execute(b"SELECT count(*) FROM moot.entries WHERE key = %s", (kept.key,)).fetchall() == [(0,)]


def test_a_watcher_is_woken_just_after_the_owner_expires(make: Make, prefix: str) -> None:
    owner, watcher = make(ttl=TTL), make(ttl=TTL * 10)
    entry = owner.create(f"{prefix}k", b"", ephemeral=True)
    assert entry is not None
    woken = threading.Event()
    watcher.watch(entry.key, woken.set)
    expiry = time.monotonic() + TTL
    while True:  # calls may come early (spurious): the one that matters finds the key gone
        wait_event(woken, what="the watch at the owner's expiry")
        woken.clear()
        if watcher.get(entry.key) is None:
            break
    assert time.monotonic() - expiry < 0.5


def listener_pids(admin: psycopg.Connection) -> list[int]:
    rows = admin.execute(b"SELECT pid FROM pg_stat_activity WHERE application_name = 'moot' "
                         b"AND query LIKE 'LISTEN%%'").fetchall()
    return [pid for (pid,) in rows]


def test_every_watch_fires_once_the_listen_connection_is_back(
        make: Make, admin: psycopg.Connection, prefix: str) -> None:
    others = set(listener_pids(admin))
    backend = make(ttl=TTL * 10)
    fired = threading.Event()
    backend.watch(f"{prefix}quiet", fired.set)
    wait_until(lambda: set(listener_pids(admin)) - others, what="the LISTEN connection the first watch opens")
    wait_event(fired, what="the watch made before the connection listened")  # changes may have been missed
    fired.clear()
    before = sorted(set(listener_pids(admin)) - others)
    for pid in before:
        admin.execute(b"SELECT pg_terminate_backend(%s)", (pid,))
    wait_event(fired, what="the watch after the LISTEN connection was re-established")
    changed = threading.Event()
    backend.watch(f"{prefix}k", changed.set)
    wait_until(lambda: set(listener_pids(admin)) - set(before) - others, what="a new LISTEN connection")
    assert backend.create(f"{prefix}k", b"") is not None
    wait_event(changed, what="a watch on the new connection")


@pytest.fixture
def own_database(pg_url: str, admin: psycopg.Connection) -> Iterator[tuple[str, str]]:
    """(URL, name) of a database of this test's own: its connections are the test's only."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}".encode())
    yield pg_url.rsplit("/", 1)[0] + "/" + name, name
    admin.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


def connections(admin: psycopg.Connection, database: str) -> int:
    """The connections the server has open to ``database`` now."""
    ((count,),) = admin.execute(b"SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    return int(count)


def heartbeats(coordinator: moot.Coordinator) -> int:
    return int(coordinator.stats()["counters"].get("heartbeats", {}).get("coordinator", 0))


def test_a_coordinator_holds_one_connection_and_listens_only_while_it_watches(
        own_database: tuple[str, str], admin: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand coordinators that only keep their membership cost a
    thousand connections: the LISTEN connection is opened by the first watch
    and closed LINGER seconds after the last one went."""
    monkeypatch.setattr(listener, "LINGER", 0.2)
    monkeypatch.setattr(idle, "SPARE_IDLE", 1.0)  # a second one a slow call made open is closed soon
    url, database = own_database
    member = moot.connect(url, member_id="member", ttl=TTL)
    try:
        member.group("g").join()
        beats = heartbeats(member)
        wait_until(lambda: heartbeats(member) >= beats + 3, what="three heartbeats after the join")
        wait_until(lambda: connections(admin, database) == 1, what="one connection once the calls stopped")
        joined = threading.Event()
        watch = member.group("g").watch(on_join=lambda m: joined.set())
        wait_until(lambda: connections(admin, database) == 2, what="the LISTEN connection of the first watch")
        with moot.connect(url, member_id="other", ttl=TTL * 10) as other:
            other.group("g").join()
            wait_event(joined, what="the watch woken by the other's join")
        watch.cancel()
        wait_until(lambda: connections(admin, database) == 1, what="the LISTEN connection closed after LINGER")
        assert member.group("g").member_ids() == {"member"}
    finally:
        member.close()
    wait_until(lambda: connections(admin, database) == 0, what="every connection closed by close()")


def test_the_pool_shrinks_back_to_one_connection_once_calls_stop_overlapping(
        make: Make, own_database: tuple[str, str], admin: psycopg.Connection, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, database = own_database
    backend = make(url, ttl=TTL * 10)
    pool = backend._pool
    assert pool is not None
    until = time.monotonic() + 5
    first = pool.checkout(until)
    second = pool.checkout(until)  # the first is busy: one more after the grace
    assert second is not first and pool.opened() == 2 == connections(admin, database)
    pool.checkin(first)
    pool.checkin(second)
    monkeypatch.setattr(idle, "SPARE_IDLE", 0.0)
    assert backend.create(f"{prefix}k", b"") is not None  # its checkin closes the idle spare
    assert pool.opened() == 1
    wait_until(lambda: connections(admin, database) == 1, what="the spare connection closed on the server")


@pytest.fixture
def own_server() -> Iterator[servers.Cluster]:
    cluster = servers.start_cluster("postgresql", size=1)
    yield cluster
    cluster.stop()


def test_a_crash_and_restart_keeps_sessions_holds_and_growing_tokens(
        own_server: servers.Cluster, make: Make) -> None:
    """A server killed (SIGQUIT: no checkpoint, recovery from the WAL) and
    restarted within the TTL: the session and its hold survive (every write
    was committed durably), calls in between fail with ConnectionLost, and
    fencing tokens keep growing."""
    url = own_server.url
    holder, other = make(url, ttl=30.0), make(url, ttl=30.0)
    entry = holder.create("r/lock", b"", ephemeral=True)
    first = holder.create_sequential("r/q/", b"", ephemeral=False)
    assert entry is not None
    member = own_server.members[0]
    own_server.kill(member, signal.SIGQUIT)
    with pytest.raises(ConnectionLost):
        holder.refresh_session()
    own_server.restart(member)
    wait_until(lambda: _answers(holder), what="the holder's calls to succeed again")
    holder.refresh_session()
    assert other.create("r/lock", b"", ephemeral=True) is None
    assert other.get("r/lock") == entry
    later = other.create_sequential("r/q/", b"", ephemeral=False)
    assert first.seq is not None and later.seq is not None and later.seq > first.seq


def _answers(backend: PostgreSQLBackend) -> bool:
    try:
        backend.ping()
    except ConnectionLost:
        return False
    return True


def test_an_unreachable_server_is_connection_lost_without_the_password(open_backend: MakeBackend) -> None:
    with socket_that_refuses() as port:
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as lost:
            open_backend(f"postgresql://u:hunter2@127.0.0.1:{port}/db", timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert "hunter2" not in str(lost.value) and "***" in str(lost.value)


class socket_that_refuses:
    """A free port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("url", [
    "postgresql://h1:5432,h2:5432/db",
    "postgresql://h/db/extra",
    "postgresql://h/db?schema=Bad-Name",
    "postgresql://h/db?schema=pg_catalog",
    "postgresql://h/db?socket_timeout=0",
    "postgresql://h/db?max_connections=0",
    "postgresql://h/db?ca_cert=/nonexistent.pem",
    "postgresql://h/db?tls=maybe",
    "postgres://u:pw@h/db?sslrootcert=/nonexistent.pem&tls=true",
])
def test_bad_urls_and_options_are_refused_before_any_io(url: str) -> None:
    with pytest.raises(InvalidURL) as refused:
        moot.connect(url)
    assert ":pw@" not in str(refused.value)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("pg-ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                    "-out", "ca.crt", "-days", "2", "-subj", "/CN=moot-test-ca"],
                   cwd=directory, check=True, capture_output=True)
    return str(directory / "ca.crt")


@pytest.mark.parametrize(("query", "expected"), [
    ("", {"sslmode": "disable"}),
    ("?tls=true", {"sslmode": "verify-full", "sslrootcert": "system"}),
    ("?tls=true&ca_cert={ca}", {"sslmode": "verify-full", "sslrootcert": "{ca}"}),
    # verify=false: libpq checks nothing only when it finds no root certificate (not even ~/.postgresql's)
    ("?tls=true&sslrootcert={ca}&verify=false", {"sslmode": "require", "sslrootcert": "/dev/null/moot-verify-false"}),
])
def test_the_tls_vocabulary_becomes_libpq_ssl_parameters(query: str, expected: dict[str, str], ca_file: str) -> None:
    url = parse_url(f"postgresql://u:pw@db.example:5433/app{query.format(ca=ca_file)}")
    backend = PostgreSQLBackend(url, dict(url.query))
    params = conninfo_to_dict(backend._conninfo)
    assert {k: params.get(k) for k in expected} == {k: v.format(ca=ca_file) for k, v in expected.items()}
    assert (params["host"], params["port"], params["dbname"], params["user"]) == ("db.example", "5433", "app", "u")
    assert "pw" not in repr(backend)
