"""What the memcached backend guarantees beyond the conformance suite, and
the differences docs/design/memcached.md documents, each shown on a real
server: session items that outlive memcached's coarse clock, one item per
directory read with its owners' liveness (a reader removes a dead owner's
entries with a compare-and-set), hashed keys that are checked, orphan
directory names that are harmless, credentials sent only when asked, a full
server that refuses with a clear error, and a server restart that loses
every session and lock while fencing tokens still grow.

The server is the run's shared memcached (``tests/servers.py``); tests that
restart or fill a server start their own.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import moot
from moot.backends.base import CallbackWatch
from moot.backends.memcached import MemcachedBackend
from moot.backends.memcached.meta import Reply, exchange, mg, ms
from moot.errors import BackendError, InvalidURL, SessionExpired
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import BOUND, wait_event, wait_until

TTL = 1.0

Make = Callable[..., MemcachedBackend]


@pytest.fixture(scope="module")
def mc_url(server: Callable[[str], str]) -> str:
    return server("memcached")


@pytest.fixture
def make(mc_url: str, open_backend: MakeBackend) -> Make:
    """``make(url=mc_url, ttl=None, **options)``: a connected backend, closed after the test."""

    def build(url: str = mc_url, ttl: float | None = None, **options: object) -> MemcachedBackend:
        made = open_backend(url, ttl=ttl, timeout=5.0, **options)
        assert isinstance(made, MemcachedBackend)
        return made

    return build


def raw(url: str, *commands: bytes) -> list[Reply]:
    """Send meta commands to the server behind ``url`` on a socket of the test's own."""
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=BOUND) as sock:
        replies = exchange(sock, b"".join(commands), len(commands), time.monotonic() + BOUND)
    assert all(isinstance(r, Reply) for r in replies), replies
    return replies  # type: ignore[return-value]


def test_a_session_item_outlives_memcacheds_clock(make: Make, mc_url: str) -> None:
    """memcached counts expiry in whole seconds on a clock that ticks once a
    second: the session item gets ceil(ttl) + 2 seconds, granted_ttl is the ttl."""
    backend = make()
    for ttl in (0.3, 1.2, 7.0):
        session = backend.open_session(ttl)
        assert backend.granted_ttl == ttl
        (reply,) = raw(mc_url, mg(b"moot:s:" + session.encode(), b"t"))
        left = int(reply.flag(b"t") or b"-1")
        assert math.ceil(ttl) + 1 <= left <= math.ceil(ttl) + 2, (ttl, left)
        backend.refresh_session()
        backend.close_session()
    backend.open_session(10**9)  # beyond 30 days memcached would read a Unix time: cut, and said so
    assert backend.granted_ttl == 30 * 24 * 3600 - 2


def test_a_reader_removes_a_dead_owners_entries_with_a_compare_and_set(make: Make, mc_url: str) -> None:
    owner, reader = make(ttl=30.0), make(ttl=30.0)
    kept = reader.create("ns-dead/g/kept", b"", ephemeral=True)
    gone = owner.create("ns-dead/g/gone", b"", ephemeral=True)
    assert kept is not None and gone is not None and gone.owner is not None
    assert reader.expire_session(gone.owner) is True
    (item,) = raw(mc_url, mg(b"moot:d:ns-dead/g/", b"v"))
    assert item.value is not None and b"gone" in item.value  # ending a session writes nothing...
    assert [e.key for e in reader.list("ns-dead/g/")] == [kept.key]  # ...its entries are absent to readers
    (item,) = raw(mc_url, mg(b"moot:d:ns-dead/g/", b"v"))
    assert item.value is not None and b"gone" not in item.value and b"kept" in item.value


def test_long_directories_are_hashed_and_checked(make: Make, mc_url: str) -> None:
    backend = make(ttl=30.0)
    directory = "ns-long/" + "x" * 300 + "/"
    fired = threading.Event()
    backend.watch(directory, fired.set)
    entry = backend.create(directory + "k", b"v")
    assert entry is not None
    wait_event(fired, what="the watch of a hashed directory")
    assert [e.key for e in backend.list("ns-long/")] == [directory + "k"]
    hashed = b"moot:D:" + hashlib.sha256(directory.encode()).hexdigest().encode()
    (item,) = raw(mc_url, mg(hashed, b"v"))
    assert item.code == b"VA" and item.value is not None
    forged = item.value.replace(directory.encode(), b"ns-long/other/", 1)  # another directory's item
    raw(mc_url, ms(hashed, forged, b"MS"))
    with pytest.raises(BackendError, match="holds"):
        backend.get(directory + "k")


def test_a_directory_named_in_its_parent_but_missing_is_harmless(make: Make, mc_url: str) -> None:
    """Directories are named in their parent before their item is created: a
    crash between the two steps leaves a name without an item, which readers skip."""
    backend = make(ttl=30.0)
    assert backend.create("ns-orphan/a/k", b"") is not None
    assert backend.create("ns-orphan/b/k", b"") is not None
    raw(mc_url, b"md moot:d:ns-orphan/a/\r\n")
    assert [e.key for e in make().list("ns-orphan/")] == ["ns-orphan/b/k"]
    assert backend.create("ns-orphan/a/k2", b"") is not None  # the directory is made again
    assert [e.key for e in make().list("ns-orphan/")] == ["ns-orphan/a/k2", "ns-orphan/b/k"]


def test_credentials_are_sent_only_when_the_server_asks(make: Make, mc_url: str) -> None:
    """The test server runs without -Y: a login would be stored as an item named 'auth'."""
    address = mc_url.split("://", 1)[1]
    backend = make(f"memcached://user:s3cret@{address}")
    assert "memcached" in backend.ping()
    assert "s3cret" not in repr(backend)
    (item,) = raw(mc_url, mg(b"auth", b"v"))
    assert item.code == b"EN"


@pytest.mark.parametrize("bad", ["memcached://127.0.0.1:1,127.0.0.1:2", "memcached://127.0.0.1:1/db",
                                 "memcached://127.0.0.1:1?poll_interval=0", "memcached://127.0.0.1:1?tls=maybe"])
def test_bad_urls_fail_at_once(bad: str) -> None:
    with pytest.raises(InvalidURL):
        moot.connect(bad)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``start(*argv)``: a memcached of the test's own, with extra arguments; its URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        root = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses to run as root unless told
        process = subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", *root, *argv],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        url = f"memcached://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return raw(url, b"version\r\n")[0].code == b"VERSION"
            except OSError:
                return False

        wait_until(answers, what="the test's own memcached")
        return url

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_full_server_run_with_M_refuses_with_a_clear_error(make: Make, own_server: Callable[..., str]) -> None:
    backend = make(own_server("-M", "-m", "2"))
    backend.open_session(30.0)
    with pytest.raises(BackendError, match="is full"):
        for i in range(1000):  # 2 MiB hold fewer than 1000 values of 500 KiB
            backend.create(f"ns-full/k{i}", b"x" * 500_000)


def test_a_restart_loses_every_session_and_lock_but_tokens_grow(open_backend: MakeBackend) -> None:
    """The documented difference: memcached keeps nothing across a restart.
    A holder learns it lost its lock on its next refresh, but another process
    may be served before that; the fencing token still grows."""
    cluster = servers.start_cluster("memcached", size=1)
    try:
        holder = moot.connect(cluster.url, member_id="holder", ttl=TTL)
        other = moot.connect(cluster.url, member_id="other", ttl=TTL)
        raw_session = open_backend(cluster.url, ttl=30.0)
        lost = threading.Event()
        first = holder.lock("x", on_lost=lambda _lock: lost.set())
        assert first.acquire(timeout=BOUND)
        token = first.token
        assert token is not None
        cluster.kill(cluster.members[0])
        cluster.restart(cluster.members[0])  # empty
        second = other.lock("x")
        assert second.acquire(timeout=BOUND)  # at once: nobody holds it any more
        assert second.token is not None and second.token > token
        wait_event(lost, what="the first holder to be told it lost the lock")
        assert not first.is_held
        with pytest.raises(SessionExpired):  # every session died with the data
            raw_session.refresh_session()
        holder.close()
        other.close()
    finally:
        cluster.stop()


def _burn_cas_to(url: str, target: int) -> None:
    """Advance the server's global CAS counter until the next write gets ``target``."""
    while True:
        (reply,) = raw(url, ms(b"test-burn", b"x", b"c"))
        if reply.cas >= target - 1:
            assert reply.cas == target - 1, "overshot: the test's own writes took more CAS values than planned"
            return


def test_a_write_planned_before_a_restart_is_not_applied_after_it(open_backend: MakeBackend) -> None:
    """memcached's CAS counter starts again at 1 when the server restarts, so
    a CAS value remembered from before a restart may name a different item
    after it. A change planned on a directory read before the restart must
    be planned again on a fresh read, not written over what another process
    wrote since (here: the other's live membership, which the stale write
    would erase while its session stays up)."""
    cluster = servers.start_cluster("memcached", size=1)
    try:
        url = cluster.url
        stale = open_backend(url, ttl=30.0)
        for _ in range(300):  # the directory's CAS value before the restart: far above what one write after it gets
            raw(url, ms(b"test-burn", b"x"))
        stale.create("ns-restart/members/a", b"a")  # cached, with its CAS value
        (before,) = raw(url, mg(b"moot:d:ns-restart/members/", b"c"))
        cluster.kill(cluster.members[0])
        cluster.restart(cluster.members[0])  # empty, counting CAS values from 1 again
        fresh = open_backend(url, ttl=30.0)
        assert fresh.create("ns-restart/members/b", b"b", ephemeral=True) is not None
        _burn_cas_to(url, before.cas)
        assert fresh.create("ns-restart/members/c", b"c") is not None  # the directory now has the old CAS value
        (after,) = raw(url, mg(b"moot:d:ns-restart/members/", b"c"))
        assert after.cas == before.cas
        assert stale.create("ns-restart/members/d", b"d") is not None
        listed = {e.key.rsplit("/", 1)[1] for e in fresh.list("ns-restart/members/")}
        assert listed == {"b", "c", "d"}
    finally:
        cluster.stop()


def test_a_watch_added_during_a_poll_round_does_not_break_the_round(make: Make) -> None:
    """A round reads the watched directories' CAS values, then compares them
    with the ones it noted before: a watch added meanwhile (a thousand waiters
    queueing at once) must wait for the next round, not fail this one (a
    failed round is retried only after a pause, so every watch was late)."""
    backend = make(ttl=30.0)
    backend.open_session(30.0)
    backend.create("ns-poll/a/k", b"1")
    backend.create("ns-poll/b/k", b"1")
    backend.watch("ns-poll/a/k", lambda: None)
    poller = backend._poller
    assert poller is not None
    probe = poller._store.probe
    added = []

    def probe_and_add(*args: object, **kwargs: object) -> object:
        if not added:
            added.append(backend.watch("ns-poll/b/k", lambda: None))
        return probe(*args, **kwargs)  # type: ignore[arg-type]

    poller._store.probe = probe_and_add  # type: ignore[method-assign]
    try:
        poller._round()
    finally:
        poller._store.probe = probe  # type: ignore[method-assign]
    assert added


def test_the_quick_rounds_after_a_change_read_the_directories_not_the_owners(make: Make) -> None:
    """Rounds come 1 ms after a change; the owners' sessions are probed at
    most once per ``poll_interval`` (an owner's death is seen within it
    either way), so a waiter's quick rounds cost one read per directory."""
    owner, watcher = make(ttl=30.0), make(ttl=30.0, poll_interval=30)
    owner.open_session(30.0)
    watcher.open_session(30.0)
    owner.create("ns-cadence/q/held", b"", ephemeral=True)
    poller = watcher._poller
    assert poller is not None
    probe = poller._store.probe
    sessions_probed: list[int] = []

    def counted(paths: object, sessions: list[str], *args: object) -> object:
        sessions_probed.append(len(sessions))
        return probe(paths, sessions, *args)  # type: ignore[arg-type]

    poller._store.probe = counted  # type: ignore[method-assign]
    try:
        watcher.watch("ns-cadence/q/held", lambda: None)
        for i in range(5):
            rounds = len(sessions_probed)
            owner.create(f"ns-cadence/q/other-{i}", b"")  # another process's write: seen by a round
            wait_until(lambda n=rounds: len(sessions_probed) > n + 1, what="two more poll rounds")
    finally:
        poller._store.probe = probe  # type: ignore[method-assign]
    assert len(sessions_probed) >= 10
    assert sum(1 for n in sessions_probed if n) <= 1, sessions_probed


def test_a_poll_read_overtaken_by_an_own_write_does_not_hide_the_next_change() -> None:
    """The lost wake-up CI met once (test_close_ends_the_session...[memcached]):
    a poll round reads a directory (before a key is created), this object's
    write creates the key and updates the watched state at once, then the
    round's older read lands. Taken as the new state, it hid the key's
    deletion that followed: "absent" before and after."""
    from moot.backends.memcached.dirs import Directory, record
    from moot.backends.memcached.poller import _Target

    run = "server-run-1"
    before = Directory("ns/", counter=1, cas=10, server=run)
    target = _Target(before)
    fired: list[str] = []
    watch = CallbackWatch(lambda: fired.append("w"), lambda _w: None)
    target.keys["w"] = {watch}
    created = before.copy()
    created.entries["w"] = record(created.bump(), None, None, b"")
    created.cas = 30
    assert target.update(created) == {watch}  # this object's write: the key appears
    read_before_the_write = before.copy()
    read_before_the_write.cas = 20
    assert target.update(read_before_the_write) == set()  # the poll round's older read
    deleted = created.copy()
    del deleted.entries["w"]
    deleted.cas = 40
    assert target.update(deleted) == {watch}  # the deletion is a change


def server_stats(url: str) -> dict[str, int]:
    """The counters of the memcached behind ``url`` (``stats``), on a socket of the test's own."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    buf = b""
    with socket.create_connection((host, int(port)), timeout=BOUND) as sock:
        sock.sendall(b"stats\r\n")
        while not buf.endswith(b"END\r\n"):
            data = sock.recv(65536)
            assert data, "memcached closed the connection"
            buf += data
    return {parts[1]: int(parts[2]) for line in buf.decode().split("\r\n")
            if (parts := line.split(" "))[0] == "STAT" and parts[2].isdigit()}


def test_a_new_directory_costs_the_same_however_many_its_parent_names(make: Make,
                                                                       own_server: Callable[..., str]) -> None:
    """Each new directory is named in its parent by appending its name to the
    parent's names item: the bytes and commands the server counts for a new
    lock (its own directory, one entry) are the same for the second thousand
    locks as for the first (the parent's item once held every name and was
    rewritten whole by each new lock: 3.3x the bytes for the second thousand)."""
    url = own_server("-M", "-m", "64")
    backend = make(url, ttl=30.0)
    backend.open_session(30.0)
    cost = []
    for start in (0, 1000):
        before = server_stats(url)
        for i in range(start, start + 1000):
            mine, queue = backend.enqueue(f"ns-many/lock/l{i:05d}/", b"")
            assert queue == [mine]
        after = server_stats(url)
        cost.append({k: after[k] - before[k] for k in ("bytes_read", "bytes_written", "cmd_get", "cmd_set")})
    first, second = cost
    for counter in first:
        assert second[counter] <= first[counter] * 1.05 + 200, (counter, first, second)
    assert first["cmd_set"] <= 3 * 1000, first  # the name, the directory's item (and its parent's, once)
    listed = backend.list("ns-many/lock/")
    assert len(listed) == 2000 and len({e.key.rsplit("/", 2)[1] for e in listed}) == 2000


def test_directories_named_at_once_by_many_writers_are_all_listed(make: Make) -> None:
    """Writers racing to name the first subdirectories of a new parent (whose
    names item does not exist yet: one adds it, the others append) lose none."""
    backends = [make(ttl=30.0) for _ in range(6)]
    start = threading.Barrier(len(backends) * 4, timeout=BOUND)
    failures: list[BaseException] = []

    def writer(backend: MemcachedBackend, who: int) -> None:
        try:
            start.wait()
            for i in range(10):
                assert backend.create(f"ns-race/p/w{who}-{i}/k", b"") is not None
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(backends[n % len(backends)], n)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert not failures and not any(t.is_alive() for t in threads), failures
    expected = sorted(f"ns-race/p/w{n}-{i}/k" for n in range(24) for i in range(10))
    assert [e.key for e in make().list("ns-race/")] == expected


def test_names_in_the_older_layouts_directory_items_are_still_listed(make: Make, mc_url: str) -> None:
    """moot before names items kept the names of a directory's subdirectories
    in the directory's own item: they are still read, and kept by later writes."""
    from moot.backends.memcached.dirs import Directory, record

    old_parent = Directory("ns-legacy/", 5, {"direct": record(5, None, None, b"d")}, frozenset({"old"}))
    old_child = Directory("ns-legacy/old/", 4, {"k": record(4, None, None, b"v")})
    raw(mc_url, ms(b"moot:d:ns-legacy/", old_parent.encode(), b"MS"), ms(b"moot:d:ns-legacy/old/",
                                                                        old_child.encode(), b"MS"))
    backend = make(ttl=30.0)
    assert backend.create("ns-legacy/new/k", b"") is not None
    entry = backend.get("ns-legacy/direct")
    assert entry is not None and backend.compare_and_set("ns-legacy/direct", b"e", entry.version) is not None
    assert [e.key for e in make().list("ns-legacy/")] == ["ns-legacy/direct", "ns-legacy/new/k", "ns-legacy/old/k"]


def test_the_names_item_of_a_hashed_directory_is_checked(make: Make, mc_url: str) -> None:
    backend = make(ttl=30.0)
    directory = "ns-longnames/" + "y" * 300 + "/"
    assert backend.create(directory + "sub/k", b"") is not None
    assert [e.key for e in backend.list(directory)] == [directory + "sub/k"]
    hashed = b"moot:N:" + hashlib.sha256(directory.encode()).hexdigest().encode()
    (item,) = raw(mc_url, mg(hashed, b"v"))
    assert item.value == (directory + "sub\n").encode()
    raw(mc_url, ms(hashed, b"ns-longnames/other/sub\n", b"MS"))  # another directory's names
    with pytest.raises(BackendError, match="holds"):
        backend.list(directory)


def test_a_directory_over_the_item_limit_is_stored_compressed(make: Make, mc_url: str) -> None:
    """A directory whose item would pass memcached's default 1 MiB item limit
    (a group of 10,000 members does) is stored compressed and read back
    whole by another backend; once it is below COMPRESS_OVER again, it is
    stored as a moot that predates compression stores and reads it."""
    from moot.backends.memcached.dirs import COMPRESS_OVER

    writer, reader = make(ttl=30.0), make(ttl=30.0)
    value = b"a member's record " * 55  # 990 bytes: kept in the directory's item, not spilled
    threads, each = 32, 32  # 1,024 entries, about 1.04 MB written plain

    def create(thread: int) -> None:
        for n in range(each):
            assert writer.create(f"ns-big/g/m{thread:02d}-{n:02d}", value) is not None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, range(threads)))
    (item,) = raw(mc_url, mg(b"moot:d:ns-big/g/", b"v"))
    assert item.value is not None and item.value.startswith(b"moot-dir-z1\n") and len(item.value) < COMPRESS_OVER
    listed = reader.list("ns-big/g/")
    assert len(listed) == threads * each and all(e.value == value for e in listed)
    for thread in range(4):  # 128 entries fewer: about 0.93 MB
        for n in range(each):
            assert writer.delete(f"ns-big/g/m{thread:02d}-{n:02d}")
    (item,) = raw(mc_url, mg(b"moot:d:ns-big/g/", b"v"))
    assert item.value is not None and item.value.startswith(b"moot-dir-1 ")
    assert len(reader.list("ns-big/g/")) == (threads - 4) * each


def test_names_go_on_to_a_new_page_once_memcached_will_not_make_one_larger(make: Make, mc_url: str) -> None:
    """A directory that has named some 25,000 subdirectories (lock names:
    they are never forgotten) fills its names item to memcached's item
    limit, which then refuses every append: new names go to the next page,
    and every name of every page is listed, by this backend and by one that
    never saw a page."""
    filler = b"".join(b"gone-%07d\n" % n for n in range(1_040_000 // 13))  # named, without items
    raw(mc_url, ms(b"moot:n:ns-pages/", filler, b"MS"))
    while all(r.code == b"HD" for r in raw(mc_url, *[ms(b"moot:n:ns-pages/", b"g\n", b"MA")] * 1000)):
        pass  # to within a byte of the limit: no line of a name fits
    writer = make(ttl=30.0)
    assert writer.create("ns-pages/new/k", b"") is not None  # page 0 is full: "new" goes to page 1
    (page1,) = raw(mc_url, mg(b"moot:n:ns-pages/#1", b"v"))
    assert page1.value == b"new\n"
    assert writer.create("ns-pages/newer/k", b"") is not None
    for reader in (writer, make(ttl=30.0)):
        assert [e.key for e in reader.list("ns-pages/")] == ["ns-pages/new/k", "ns-pages/newer/k"]


def test_a_waiter_is_served_on_the_poll_that_saw_the_entries_ahead_go_without_reading_again(mc_url: str) -> None:
    """The poll round that reads a changed queue reads its owners' sessions
    too: a waiter that it shows first in line (every entry ahead gone, its
    own there, its session alive) is served on it, without reading the
    queue again. Also with two entries ahead: each waiter is served by its
    own poller's read once the holder and then the waiter before it release."""
    ns = f"served-{os.getpid()}-{time.monotonic_ns()}"
    coords = [moot.connect(mc_url, member_id=f"c{i}", namespace=ns, ttl=5) for i in range(3)]
    try:
        locks = [coord.lock("l") for coord in coords]
        assert locks[0].acquire(timeout=BOUND)
        served = [threading.Event() for _ in coords]
        release = [threading.Event() for _ in coords]
        sent: list[list[bytes]] = [[], [], []]

        def take(index: int) -> None:
            if locks[index].acquire(timeout=BOUND):
                served[index].set()
                release[index].wait(BOUND)
                locks[index].release()

        def counting(index: int) -> None:
            backend = coords[index].session.backend
            assert isinstance(backend, MemcachedBackend) and backend._pool is not None
            run = backend._pool.run

            def counted(payload: bytes, count: int, *args: object, **kwargs: object) -> object:
                # what reads or writes the queue (not a heartbeat's session item)
                sent[index].extend(line[:60] for line in payload.split(b"\r\n")
                                   if line[:2] in (b"mg", b"ms", b"md", b"ma") and b" moot:s:" not in line)
                return run(payload, count, *args, **kwargs)  # type: ignore[arg-type]

            backend._pool.run = counted  # type: ignore[method-assign]

        threads = []
        for index in (1, 2):
            counting(index)
            threads.append(threading.Thread(target=take, args=(index,), daemon=True))
            threads[-1].start()
            wait_until(lambda n=index: len(getattr(coords[0].lock_info("l"), "waiters", ())) == n,  # type: ignore[misc]
                       what=f"waiter {index} to queue")
        wait_until(lambda: all(coords[i].session.backend._poller._targets for i in (1, 2)),  # type: ignore[attr-defined]
                   what="both waiters' watches")
        sent[1].clear()
        sent[2].clear()
        locks[0].release()
        wait_event(served[1], what="the first waiter to be served")
        assert sent[1] == [], f"the waiter next in line sent {sent[1]} once woken"
        assert not served[2].is_set()
        release[1].set()
        wait_event(served[2], what="the second waiter to be served")
        assert sent[2] == [], f"the waiter that had two ahead sent {sent[2]} once woken"
        release[2].set()
        for thread in threads:
            thread.join(BOUND)
    finally:
        for coord in coords:
            coord.close()
