"""What the MySQL/MariaDB backend guarantees beyond the conformance suite:
tables made on first use (by clients racing to make them, and for a user
that may not: the statements to run), keys that never collide (bytes, no
hashing, case kept) up to InnoDB's key limit and refused past it, expired
owners reaped by the client that needs the key, by an enqueue that sees
them and by watchers at the owner's expiry, a release that wakes another process's waiter through
its wake-up hint (and an entry without one left to the poller), a release in this process that
wakes its next waiter and no other (unless another process wrote meanwhile), a several-host URL
that moves past a dead host, a server crash and restart, and bad URLs refused before any I/O.

The server is ``$MOOT_TEST_MYSQL_URL`` if set, else one started by
``tests/servers.py``; the restart test starts its own.
"""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pymysql
import pytest

import moot
from moot.backends._support import idle
from moot.backends.mysql import MySQLBackend, sql
from moot.backends.mysql.sql import MAX_KEY_BYTES
from moot.errors import ConnectionLost, InvalidArgument, InvalidURL, PermissionDenied
from moot.url import parse_url
from moot.waits import Wake
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import wait_event, wait_until

TTL = 1.0

Make = Callable[..., MySQLBackend]


@pytest.fixture(scope="module")
def my_url(server: Callable[[str], str]) -> str:
    """The run's shared mysql server (``MOOT_TEST_MYSQL_URL`` if set)."""
    return server("mysql")


def _admin(url: str) -> pymysql.connections.Connection:
    parsed = parse_url(url)
    host, port = parsed.host_port(3306)
    return pymysql.connect(host=host, port=port, user=parsed.username or "root", password=parsed.password or "",
                           database=parsed.path.strip("/"), autocommit=True)


@pytest.fixture
def admin(my_url: str) -> Iterator[pymysql.connections.Connection]:
    conn = _admin(my_url)
    yield conn
    conn.close()


@pytest.fixture
def make(my_url: str, open_backend: MakeBackend) -> Make:
    """``make(url=my_url, ttl=None, **options)``: a connected backend, closed after the test."""
    return lambda url=my_url, ttl=None, **options: open_backend(url, ttl=ttl, timeout=5.0, **options)


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}/"


@pytest.fixture
def tables(admin: pymysql.connections.Connection) -> Iterator[str]:
    """A table prefix of this test's own; its tables are dropped after it."""
    name = f"t{uuid.uuid4().hex[:10]}_"
    yield name
    with admin.cursor() as cursor:
        for table in ("sessions", "counters", "entries"):
            cursor.execute(f"DROP TABLE IF EXISTS {name}{table}")


def _tables(admin: pymysql.connections.Connection, name: str) -> set[str]:
    with admin.cursor() as cursor:
        cursor.execute("SELECT table_name, engine FROM information_schema.tables WHERE table_schema = DATABASE() "
                       "AND table_name LIKE %s", (name.replace("_", "\\_") + "%",))
        rows = cursor.fetchall()
    assert all(engine == "InnoDB" for _, engine in rows), rows
    return {table for table, _ in rows}


def test_tables_are_made_on_first_use_by_clients_racing_to_make_them(
        make: Make, admin: pymysql.connections.Connection, tables: str, prefix: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: make(table_prefix=tables, ttl=TTL), range(4)))
    assert _tables(admin, tables) == {f"{tables}sessions", f"{tables}counters", f"{tables}entries"}
    entry = made[0].create(f"{prefix}k", b"v")
    assert entry is not None and made[3].get(f"{prefix}k") == entry


def test_a_user_that_may_not_create_the_tables_is_told_the_statements_to_run(
        my_url: str, make: Make, admin: pymysql.connections.Connection, tables: str, prefix: str) -> None:
    user, password = f"u{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON moot.* TO '{user}'@'127.0.0.1'")
    try:
        limited = my_url.replace("root@", f"{user}:{password}@")
        with pytest.raises(PermissionDenied) as refused:
            make(url=limited, table_prefix=tables)
        message = str(refused.value)
        assert password not in message
        statements = [s.strip() for s in message.split("run:\n", 1)[1].split(";\n") if s.strip().startswith("CREATE")]
        assert len(statements) == 3 and all(s.startswith(f"CREATE TABLE IF NOT EXISTS {tables}") for s in statements)
        with admin.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        backend = make(url=limited, table_prefix=tables, ttl=TTL)
        assert backend.create(f"{prefix}k", b"v", ephemeral=True) is not None
        assert password not in repr(backend)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP USER '{user}'@'127.0.0.1'")


def test_keys_never_collide_and_keep_their_case_up_to_the_key_limit(make: Make, prefix: str) -> None:
    backend = make(ttl=TTL)
    longest = prefix + "x" * (MAX_KEY_BYTES - len(prefix) - 1)
    keys = [f"{prefix}a", f"{prefix}A", f"{prefix}a-", f"{prefix}a_", f"{prefix}%C3%A9", f"{prefix}%c3%a9",
            longest + "a", longest + "b"]
    for key in keys:
        assert backend.create(key, key.encode()) is not None, key
    assert [e.key for e in backend.list(prefix)] == sorted(keys)
    assert all(backend.get(key).value == key.encode() for key in keys)  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match=str(MAX_KEY_BYTES)):
        backend.create(longest + "ab", b"")


def test_names_cut_short_by_the_server_are_read_again_one_row_each(
        make: Make, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """names() reads one joined value; where the server cuts it (here
    ``group_concat_max_len`` = 64 bytes, as ``max_allowed_packet`` would), it
    reads every name as a row of its own instead of returning part of them."""
    monkeypatch.setattr(sql, "SETUP", sql.SETUP.replace("4294967295", "64"))
    backend = make(ttl=TTL * 10)
    # 40 names, cut after 6; 6 names of 10 bytes (65 joined), cut within the last one
    for directory, count in ((f"{prefix}many/", 40), (f"{prefix}six/", 6)):
        members = [f"member-{i:03d}" for i in range(count)]
        for name in members:
            assert backend.create(f"{directory}{name}", b"{}", ephemeral=True) is not None
        assert backend.create(f"{directory}{members[0]}/deeper", b"") is not None  # not directly under it
        assert backend.names(directory) == members


def _row_lock_waits(admin: pymysql.connections.Connection) -> int:
    with admin.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_waits'")
        return int(cursor.fetchone()[1])


def test_a_session_opens_after_its_clean_up_of_old_sessions_timed_out_on_a_lock(
        my_url: str, make: Make, admin: pymysql.connections.Connection, tables: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """open_session also deletes sessions an hour past their expiry; a lock
    wait timeout there makes the pool send the batch again, which must not
    then fail on the session it already inserted ("Duplicate entry")."""
    monkeypatch.setattr(sql, "SETUP", sql.SETUP.replace("innodb_lock_wait_timeout = 5", "innodb_lock_wait_timeout = 1"))
    backend = make(table_prefix=tables, socket_timeout="20")
    locker = _admin(my_url)
    try:
        with locker.cursor() as cursor:
            cursor.execute(f"INSERT INTO {tables}sessions VALUES ('old', 1, 0)")  # expired in 1970
            cursor.execute("START TRANSACTION")
            cursor.execute(f"SELECT id FROM {tables}sessions WHERE id = 'old' FOR UPDATE")
        waits = _row_lock_waits(admin)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            opened = pool.submit(backend.open_session, TTL * 10)
            wait_until(lambda: opened.done() or _row_lock_waits(admin) >= waits + 2,
                       what="the clean-up to wait twice for the lock")
            locker.rollback()
            session = opened.result(timeout=20)
    finally:
        locker.close()
    assert backend.session_last_seen(session) is not None
    with admin.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {tables}sessions ORDER BY id")
        assert cursor.fetchall() == ((session,),)


def test_a_coordinator_that_watches_nothing_holds_one_connection(
        my_url: str, admin: pymysql.connections.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its heartbeat, when it comes during a call, waits for the busy
    connection rather than open a second one; and a second one that a slow
    call made needed is closed once it stayed idle SPARE_IDLE s."""
    monkeypatch.setattr(idle, "SPARE_IDLE", 1.0)
    database = f"t_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {database}")

    def connections() -> int:
        with admin.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE db = %s", (database,))
            return int(cursor.fetchone()[0])

    def heartbeats() -> int:
        return int(member.stats()["counters"].get("heartbeats", {}).get("coordinator", 0))

    try:
        with moot.connect(my_url.rsplit("/", 1)[0] + "/" + database, member_id="member", ttl=TTL) as member:
            member.group("g").join()
            beats = heartbeats()
            wait_until(lambda: heartbeats() >= beats + 3, what="three heartbeats after the join")
            wait_until(lambda: connections() == 1, what="one connection once the calls stopped")
            assert member.group("g").member_ids() == {"member"}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {database}")


def test_an_expired_owner_is_reaped_by_the_client_that_needs_its_key(
        make: Make, admin: pymysql.connections.Connection, prefix: str) -> None:
    owner, other = make(ttl=TTL), make(ttl=10.0)
    assert owner.create(f"{prefix}k", b"old", ephemeral=True) is not None
    owner.forget_after_fork()  # as if its process died: no refresh, no close
    wait_until(lambda: other.get(f"{prefix}k") is None, what="the owner's expiry")
    with admin.cursor() as cursor:  # still a row: readers see it absent, nobody removed it yet
        cursor.execute("SELECT COUNT(*) FROM moot_entries WHERE k = %s", (f"{prefix}k".encode(),))
        assert cursor.fetchone()[0] == 1
    made = other.create(f"{prefix}k", b"new", ephemeral=True)
    assert made is not None and made.value == b"new"


def test_an_enqueue_that_sees_dead_entries_removes_them(
        make: Make, admin: pymysql.connections.Connection, prefix: str) -> None:
    owner, other = make(ttl=TTL), make(ttl=10.0)
    dead, _ = owner.enqueue(f"{prefix}q/", b"a")
    owner.forget_after_fork()  # as if its process died: no refresh, no close
    wait_until(lambda: other.get(dead.key) is None, what="the owner's expiry")
    mine, queue = other.enqueue(f"{prefix}q/", b"b")  # nobody watches: only the enqueue can remove it
    assert [entry.key for entry in queue] == [mine.key] and mine.seq is not None and dead.seq is not None
    assert mine.seq > dead.seq
    with admin.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM moot_entries WHERE k = %s", (dead.key.encode(),))
        assert cursor.fetchone()[0] == 0


def test_a_watcher_is_woken_just_after_the_owner_expires(make: Make, prefix: str) -> None:
    owner, watcher = make(ttl=TTL), make(ttl=10.0)
    assert owner.create(f"{prefix}q/1", b"", ephemeral=True) is not None
    woken = threading.Event()
    watcher.watch(f"{prefix}q/1", woken.set)
    owner.forget_after_fork()
    stopped = time.monotonic()
    wait_event(woken, what="the watch at the owner's expiry")
    assert time.monotonic() - stopped < TTL + 0.5
    assert watcher.get(f"{prefix}q/1") is None


def test_a_write_in_this_process_wakes_its_watchers_at_once(make: Make, prefix: str) -> None:
    writer, watcher = make(ttl=TTL), make(ttl=TTL, poll_interval=60)
    woken = threading.Event()
    watcher.watch(f"{prefix}d/", woken.set)
    time.sleep(0.1)  # the poller's pauses have grown: only the fast path can be this quick
    started = time.monotonic()
    writer.create(f"{prefix}d/k", b"")
    wait_event(woken, timeout=1.0, what="the in-process wake-up")
    assert time.monotonic() - started < 0.5


def _elsewhere(url: str) -> str:
    """The same server under another host list: a backend of another process, as far as the
    in-process fast path can tell (no wake-up through this process's memory)."""
    address = url.split("@", 1)[1].split("/", 1)[0]
    return url.replace(address, f"{address},{address}")


def test_a_release_wakes_a_waiter_of_another_process_through_its_hint_not_a_poll(
        my_url: str, make: Make, prefix: str) -> None:
    holder, waiter = make(url=_elsewhere(my_url), ttl=10.0), make(ttl=10.0, poll_interval=60)
    first, _ = holder.enqueue(f"{prefix}q/", b"a")
    waiter.enqueue(f"{prefix}q/", b"b")
    polls: list[float] = []
    poller = waiter._poller
    assert poller is not None
    run = poller._run_sql
    poller._run_sql = lambda statement, args: polls.append(time.monotonic()) or run(statement, args)
    woken = threading.Event()
    waiter.watch(first.key, woken.set)
    wait_until(lambda: poller._pause >= 1.0, what="the poller's pause to grow past 1 s")
    released = time.monotonic()
    assert holder.delete(first.key)
    wait_event(woken, what="the hint's wake-up")
    woke = time.monotonic()
    assert not [t for t in polls if released <= t <= woke], "a poll, not the hint, woke the waiter"


def test_a_watched_entry_made_without_a_hint_is_left_to_the_poller(
        my_url: str, make: Make, prefix: str) -> None:
    holder, waiter = make(url=_elsewhere(my_url), ttl=10.0), make(ttl=10.0)
    unhinted = holder.create_sequential(f"{prefix}q/", b"a")  # only enqueue takes a hint
    woken = threading.Event()
    watch = waiter.watch(unhinted.key, woken.set)
    poller = waiter._poller
    assert poller is not None
    wait_until(lambda: not any(watch in found.hinted for found in poller._dirs.values()),
               what="the waiter to find the hint free while the entry lives")
    assert not woken.is_set()
    assert holder.delete(unhinted.key)
    wait_event(woken, what="the poll's wake-up")


def _queue_of_waiters(make: Make, prefix: str, poll_interval: float) \
        -> tuple[MySQLBackend, list[tuple[MySQLBackend, Wake]], list[str]]:
    """A holder and three waiters of this process (each its own backend, as
    each coordinator has), each waiter watching the entry before its own,
    with its poller's pauses grown past 1 s: only the in-process fast path
    (or a hint) can wake them now. -> holder, [(waiter, its wake)], keys."""
    holder = make(ttl=10.0)
    waiters = [make(ttl=10.0, poll_interval=poll_interval) for _ in range(3)]
    keys = [holder.enqueue(f"{prefix}q/", b"h")[0].key]
    keys += [waiter.enqueue(f"{prefix}q/", b"w")[0].key for waiter in waiters]
    wakes = []
    for waiter, before in zip(waiters, keys[:-1], strict=True):
        wake = Wake()  # a waiter's wake-up: the fast path sets it on the writing thread
        waiter.watch(before, wake.set)
        wakes.append((waiter, wake))
    for waiter, _ in wakes:
        poller = waiter._poller
        assert poller is not None
        wait_until(lambda p=poller: p._pause >= 1.0, what="the poller's pause to grow past 1 s")
    return holder, wakes, keys


@pytest.mark.parametrize("blocks", [True, False], ids=["compound", "batches"])
def test_a_release_in_this_process_wakes_the_next_waiter_and_no_other(make: Make, prefix: str,
                                                                       blocks: bool) -> None:
    holder, wakes, keys = _queue_of_waiters(make, prefix, poll_interval=60)
    assert holder._blocks  # MariaDB: the compound statement; the batch is MySQL's form
    holder._blocks = blocks
    assert not any(wake.is_set() for _, wake in wakes)
    assert holder.delete(keys[0])
    # The fast path runs on the releasing thread, before delete() returns.
    assert [wake.is_set() for _, wake in wakes] == [True, False, False], "a herd: waiters behind were woken"


def test_a_release_after_another_process_removed_a_watched_entry_still_wakes_its_waiter(
        my_url: str, make: Make, prefix: str) -> None:
    holder, wakes, keys = _queue_of_waiters(make, prefix, poll_interval=60)
    elsewhere = make(url=_elsewhere(my_url), ttl=10.0)
    # Removed by another process while its maker still holds its hint: only the directory's counter says so.
    assert elsewhere.delete(keys[2])
    assert not wakes[2][1].is_set()
    assert holder.delete(keys[0])
    # This process's release is not the only write since the pollers last looked: every watch fires.
    assert [wake.is_set() for _, wake in wakes] == [True, True, True]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_url_with_several_hosts_moves_past_a_dead_one(my_url: str, make: Make, prefix: str) -> None:
    address = my_url.split("@", 1)[1].split("/", 1)[0]
    backend = make(url=my_url.replace(address, f"127.0.0.1:{_free_port()},{address}"), ttl=TTL)
    assert backend.create(f"{prefix}k", b"") is not None
    assert address in backend.ping()


@pytest.fixture
def own_server() -> Iterator[servers.Cluster]:
    cluster = servers.start_cluster("mysql", size=1)
    yield cluster
    cluster.stop()


def test_a_crash_and_restart_keeps_sessions_holds_and_growing_tokens(own_server: servers.Cluster) -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    with moot.connect(own_server.url, member_id="a", ttl=10.0, namespace=namespace) as coord:
        lock = coord.lock("x")
        assert lock.acquire(timeout=5)
        token = lock.token
        assert token is not None
        lost = threading.Event()
        lock.on_lost = lambda _lock: lost.set()
        own_server.kill(own_server.members[0], signal.SIGKILL)
        own_server.restart(own_server.members[0])
        wait_until(lambda: coord.lock_info("x") is not None, what="the engine answering again")
        assert lock.is_held and not lost.is_set()  # durable: the session and its hold survived the crash
        lock.release()
        again = coord.lock("x")
        assert again.acquire(timeout=5)
        assert again.token is not None and again.token > token


def test_an_unreachable_server_is_connection_lost_without_the_password(open_backend: MakeBackend) -> None:
    url = f"mysql://root:s3cr3t-pw@127.0.0.1:{_free_port()}/moot"
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as lost:
        open_backend(url, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert "s3cr3t-pw" not in str(lost.value) and "gave up after" in str(lost.value)


@pytest.mark.parametrize("url", [
    "mysql://root@127.0.0.1:1/", "mysql://root@127.0.0.1:1/a/b", "mysql://root@127.0.0.1:1/bad;name",
    "mysql://root@127.0.0.1:1/moot?table_prefix=bad-prefix", "mysql://root@127.0.0.1:1/moot?poll_interval=0",
    "mysql://root@127.0.0.1:1/moot?max_connections=0", "mysql://root@127.0.0.1:1/moot?ssl_ca=/x",
    "mysql://root@127.0.0.1:1/moot?tls=maybe",
])
def test_bad_urls_and_options_are_refused_before_any_io(url: str) -> None:
    with pytest.raises(InvalidURL):
        moot.connect(url)


def test_the_tls_vocabulary_becomes_a_pymysql_ssl_context() -> None:
    parsed = parse_url("mysql://root@127.0.0.1:1/moot?tls=true&verify=false")
    backend = MySQLBackend(parsed, dict(parsed.query))
    assert backend._kwargs["ssl"].check_hostname is False
    plain = MySQLBackend(parse_url("mysql://root@127.0.0.1:1/moot"), {})
    assert plain._kwargs["ssl_disabled"] is True and "ssl" not in plain._kwargs
