"""What the ZooKeeper backend guarantees beyond the conformance suite: a real
session expiry forced from another client, sessions and watches that survive
a dropped connection and a server restart, one round trip per enqueue and per
release, fencing tokens that keep growing even if the tree is deleted, nested
listing, the multi-read (one request per listed level, its fallback on a
server that refuses it, and the kazoo releases it is tested with), the URL's
chroot, the ``kazoo://`` spelling, and the removal of a released lock's
parent znodes (also racing acquisitions).

The server is ``$MOOT_TEST_ZOOKEEPER_URL`` if set, else one started by
``tests/servers.py`` (a missing ZooKeeper fails these tests; they never skip).
The server-restart test starts its own.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.protocol.connection import _CONNECTION_DROP

import moot
from moot.backends.base import Entry, Watch
from moot.backends.zookeeper import ZooKeeperBackend, multiread, sweeper
from moot.backends.zookeeper.multiread import TESTED_KAZOO
from moot.backends.zookeeper.znodes import _SEQ, _SESSIONS
from moot.errors import BackendError, ConnectionLost, SessionExpired
from moot.url import parse_url
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import wait_event, wait_until

TTL = 2.0


@pytest.fixture(scope="module")
def zk_url(server: Callable[[str], str]) -> str:
    """The run's shared zookeeper server (``MOOT_TEST_ZOOKEEPER_URL`` if set)."""
    return server("zookeeper")


@pytest.fixture
def make(zk_url: str, open_backend: MakeBackend) -> Callable[..., ZooKeeperBackend]:
    """``make(url=zk_url, ttl=TTL, timeout=5)``: a backend with an open session, closed after the test."""
    return lambda url=zk_url, ttl=TTL, timeout=5.0: open_backend(url, ttl=ttl, timeout=timeout)


@pytest.fixture
def raw(zk_url: str) -> Iterator[KazooClient]:
    """A plain kazoo client on the same server, to look at the znodes themselves."""
    client = KazooClient(hosts=zk_url.split("://", 1)[1].split("/", 1)[0])
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def ns() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def drop_connection(backend: ZooKeeperBackend) -> None:
    """Break the backend's TCP connection (kazoo's test hook); its session lives on."""
    conn = backend._conn
    assert conn is not None
    conn.zk._call(_CONNECTION_DROP, conn.zk.handler.async_result())


def count_requests(backend: ZooKeeperBackend) -> list[str]:
    """Record the type of every request the backend's client sends from now on."""
    conn = backend._conn
    assert conn is not None
    sent: list[str] = []
    real = conn.zk._call

    def counting(request: Any, async_object: Any) -> Any:
        sent.append(type(request).__name__)
        return real(request, async_object)

    conn.zk._call = counting
    return sent


def test_expire_session_from_another_client_ends_it_for_real(make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    owner, other = make(), make()
    session = owner._session
    assert session is not None
    lost = threading.Event()
    owner.set_session_listener(lost.set)
    owner.create(f"{ns}/member", b"m", ephemeral=True)
    mine, _ = owner.enqueue(f"{ns}/q/", b"w")
    assert mine.owner == session.id
    woken = threading.Event()
    watch = other.watch(f"{ns}/member", woken.set)

    assert other.expire_session(session.id) is True

    wait_event(lost, what="the owner's session listener")
    wait_event(woken, what="the watcher's callback")
    assert other.get(f"{ns}/member") is None
    assert other.list(f"{ns}/q/") == []
    assert other.session_last_seen(session.id) is None
    assert other.expire_session(session.id) is False
    with pytest.raises(SessionExpired):
        owner.refresh_session()
    with pytest.raises(SessionExpired):
        owner.create(f"{ns}/member", b"m", ephemeral=True)
    owner.close_session()
    renewed = owner.open_session(TTL)
    assert renewed != session.id
    entry = owner.create(f"{ns}/member", b"m", ephemeral=True)
    assert entry is not None and entry.owner == renewed
    watch.cancel()


def test_expire_unknown_session(make: Callable[..., ZooKeeperBackend]) -> None:
    backend = make()
    assert backend.expire_session("123abc") is False
    assert backend.expire_session("not hex") is False
    assert backend.session_last_seen("123abc") is None


def test_dropped_connection_keeps_session_and_watches(make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    backend, writer = make(ttl=5.0), make()
    session = backend._session
    assert session is not None
    backend.create(f"{ns}/mine", b"m", ephemeral=True)
    calls: list[int] = []
    called = threading.Condition()

    def callback() -> None:
        with called:
            calls.append(1)
            called.notify_all()

    backend.watch(f"{ns}/k", callback)
    backend.watch(f"{ns}/dir/", callback)
    drop_connection(backend)
    with called:  # re-armed after the reconnection and called once, changes may have been missed
        assert called.wait_for(lambda: len(calls) >= 2, 20)
    backend.refresh_session()
    assert backend._session is session and not session.expired
    assert writer.get(f"{ns}/mine") is not None
    seen = len(calls)
    writer.create(f"{ns}/k", b"v")
    with called:
        assert called.wait_for(lambda: len(calls) > seen, 20)
    seen = len(calls)
    writer.create(f"{ns}/dir/c", b"v")
    with called:
        assert called.wait_for(lambda: len(calls) > seen, 20)


def test_enqueue_and_release_are_one_round_trip(make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    backend = make()
    first, _ = backend.enqueue(f"{ns}/lock/a/q/", b"first")  # creates the queue's parent znodes
    backend.delete(first.key)
    sent = count_requests(backend)
    mine, entries = backend.enqueue(f"{ns}/lock/a/q/", b"second")
    assert sent == ["Create2", "GetChildren"]  # sent together, answered in order
    assert entries == [mine]
    sent.clear()
    assert backend.delete(mine.key) is True
    assert sent == ["Delete"]


def test_tokens_keep_growing_across_clients_and_tree_deletion(
        make: Callable[..., ZooKeeperBackend], raw: KazooClient, ns: str) -> None:
    first = make()
    one = first.create_sequential(f"{ns}/q/", b"1")
    first.close()
    second = make()
    two = second.create_sequential(f"{ns}/q/", b"2")
    raw.delete(f"/moot/{ns}", recursive=True)  # an operator wipes the tree: names restart, tokens do not
    three = second.create_sequential(f"{ns}/q/", b"3")
    assert one.seq is not None and two.seq is not None and three.seq is not None
    assert one.seq < two.seq < three.seq
    assert three.key == f"{ns}/q/0000000000"


def test_list_nested_keys_not_parents(make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    backend = make()
    backend.create(f"{ns}/lock/a/q/x", b"1")
    backend.create(f"{ns}/lock/b/q/y", b"2", ephemeral=True)
    backend.create(f"{ns}/lockless", b"3")
    assert [e.key for e in backend.list(f"{ns}/lock/")] == [f"{ns}/lock/a/q/x", f"{ns}/lock/b/q/y"]
    assert [e.key for e in backend.list(f"{ns}/lock")] == [
        f"{ns}/lock/a/q/x", f"{ns}/lock/b/q/y", f"{ns}/lockless"]
    assert backend.get(f"{ns}/lock/a") is None  # a mere parent is not a key
    assert backend.delete(f"{ns}/lock/a") is False
    assert backend.list(f"{ns}/missing/") == []


def test_key_that_is_also_a_parent(make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    backend = make()
    backend.create(f"{ns}/p/c", b"child")
    made = backend.create(f"{ns}/p", b"parent")  # the existing parent znode becomes a key
    assert made is not None and made.value == b"parent"
    assert backend.create(f"{ns}/p", b"again") is None
    assert backend.delete(f"{ns}/p", made.version) is True  # the child stays
    assert backend.get(f"{ns}/p") is None
    assert [e.key for e in backend.list(f"{ns}/")] == [f"{ns}/p/c"]
    backend.create(f"{ns}/e", b"", ephemeral=True)
    with pytest.raises(BackendError, match="ephemeral"):
        backend.create(f"{ns}/e/c", b"")


def test_lost_creation_reply_leaves_no_phantom_entry(
        make: Callable[..., ZooKeeperBackend], raw: KazooClient, ns: str) -> None:
    """A queue entry whose creation reply was lost is found by its tag and removed."""
    backend = make()
    kept, _ = backend.enqueue(f"{ns}/q/", b"kept")
    tag = b"12345678"
    phantom = raw.create(f"/moot/{ns}/q/", _SEQ + tag + b"lost", sequence=True)
    backend._orphans[tag] = f"/moot/{ns}/q"  # what a ConnectionLoss during that creation records
    backend.refresh_session()
    assert raw.exists(phantom) is None
    assert [e.key for e in backend.list(f"{ns}/q/")] == [kept.key]


def test_chroot(make: Callable[..., ZooKeeperBackend], zk_url: str, raw: KazooClient, ns: str) -> None:
    base = zk_url.rstrip("/")
    one, two, default = make(f"{base}/{ns}-one/deep"), make(f"{base}/{ns}-two"), make(base)
    one.create(ns, b"1")
    assert two.get(ns) is None and default.get(ns) is None
    assert raw.exists(f"/{ns}-one/deep/{ns}") is not None
    default.create(ns, b"d")  # the default chroot is /moot
    assert raw.exists(f"/moot/{ns}") is not None
    assert [e.key for e in one.list("")] == [ns]


def test_kazoo_alias_and_coordinator(zk_url: str, ns: str) -> None:
    url = zk_url.replace("zookeeper://", "kazoo://", 1)
    with moot.connect(url, member_id="a", ttl=TTL, namespace=ns) as a, \
            moot.connect(url, member_id="b", ttl=TTL, namespace=ns) as b:
        assert isinstance(a.backend, ZooKeeperBackend)
        with a.lock("l") as held:
            info = b.lock_info("l")
            assert info is not None and info.holder == "a" and info.token == held.token
        assert "ZooKeeper" in a.backend.ping() or "Zookeeper" in a.backend.ping()


def test_refused_connection_fails_fast_and_says_so() -> None:
    """Every host refusing is known at once: no waiting out the timeout."""
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        backend = ZooKeeperBackend(parse_url(f"zookeeper://127.0.0.1:{unused.getsockname()[1]}"), {})
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="refused the connection"):
            backend.connect(5.0)
        assert time.monotonic() - started < 1.0
        backend.close()


def test_unresolvable_host_fails_fast_and_says_so() -> None:
    backend = ZooKeeperBackend(parse_url("zookeeper://no-such-host.invalid:2181"), {})  # .invalid never resolves
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="resolves"):
        backend.connect(3.0)
    assert time.monotonic() - started < 1.0
    backend.close()


def test_credentials_and_password_never_shown(zk_url: str, raw: KazooClient, ns: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # kazoo logs its digest login at DEBUG
    url = zk_url.replace("zookeeper://", "zookeeper://alice:s3cret@", 1).rstrip("/") + f"/{ns}-auth"
    backend = ZooKeeperBackend(parse_url(url), {})
    try:
        backend.connect(5.0)
        backend.open_session(TTL)
        backend.create("k", b"x")
        assert backend.get("k") is not None
        assert "s3cret" not in repr(backend.url) and "s3cret" not in backend.ping()
        with pytest.raises(NoAuthError):  # readable by that identity only
            raw.get(f"/{ns}-auth/k")
    finally:
        backend.close()
    assert "Auth" in caplog.text and "s3cret" not in caplog.text


def test_server_restart_keeps_session() -> None:
    cluster = servers.start_cluster("zookeeper", size=1)
    try:
        backend = ZooKeeperBackend(parse_url(cluster.url), {})
        backend.connect(2.0)
        session_id = backend.open_session(30.0)
        backend.create("t/mine", b"m", ephemeral=True)
        woken = threading.Event()
        backend.watch("t/other", woken.set)
        (member,) = cluster.members
        cluster.kill(member)
        with pytest.raises(ConnectionLost):
            backend.get("t/mine")
        cluster.restart(member)
        wait_event(woken, what="the watch to be re-armed and called after the restart")
        woken.clear()
        backend.refresh_session()
        entry = backend.get("t/mine")
        assert entry is not None and entry.owner == session_id
        backend.create("t/other", b"o")
        wait_event(woken, what="a change after the restart")
        backend.close()
    finally:
        cluster.stop()


# -- multi-read (moot/backends/zookeeper/multiread.py, built on kazoo internals) --


def test_kazoo_is_a_release_the_multi_read_is_tested_with() -> None:
    version = importlib.metadata.version("kazoo")
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) in TESTED_KAZOO, (
        f"kazoo {version} is not a release the ZooKeeper multi-read is tested with {TESTED_KAZOO}: it is built "
        "on kazoo internals (moot/backends/zookeeper/multiread.py); run this file's multi-read tests with it, "
        "then add it to TESTED_KAZOO")


def test_list_reads_a_level_in_one_multi_read(make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    backend = make()
    keys = [f"{ns}/g/m{i:03d}" for i in range(50)]
    for i, key in enumerate(keys):
        backend.create(key, str(i).encode(), ephemeral=i % 2 == 0)
    sent = count_requests(backend)
    entries = backend.list(f"{ns}/g/")
    assert [(e.key, e.value) for e in entries] == [(key, str(i).encode()) for i, key in enumerate(keys)]
    assert [e.owner is not None for e in entries] == [i % 2 == 0 for i in range(len(keys))]
    assert sent == ["GetChildren", "_MultiRead"]


def test_list_falls_back_to_one_read_per_znode_on_a_server_without_multi_read(
        make: Callable[..., ZooKeeperBackend], ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = make()
    member = backend.create(f"{ns}/g/member", b"m", ephemeral=True)
    other = backend.create(f"{ns}/g/other", b"o")
    assert member is not None and other is not None
    # An opcode the server does not know: it answers UNIMPLEMENTED and drops the connection, as a
    # server before ZooKeeper 3.6 answers a multi-read.
    monkeypatch.setattr(multiread._MultiRead, "type", 9999)
    sent = count_requests(backend)
    assert backend.list(f"{ns}/g/") == [member, other]
    # then one read per znode (and, once reconnected, the session record's watch armed again)
    assert sent[:2] == ["GetChildren", "_MultiRead"] and set(sent[2:]) - {"Exists"} == {"GetData"}
    backend.refresh_session()  # the session outlived the dropped connection
    assert backend.get(member.key) == member
    sent.clear()
    assert backend.list(f"{ns}/g/") == [member, other]
    # found out once, not asked again (nor guessing names in a multi-read)
    assert [kind for kind in sent if kind != "Exists"] == ["GetChildren", "GetData", "GetData"]


def test_listing_again_is_one_multi_read_whose_guesses_are_never_trusted(
        make: Callable[..., ZooKeeperBackend], raw: KazooClient, ns: str) -> None:
    """A listing reads the names the last one found (and, in a queue, the
    next few sequential names) with the listing itself: one request when
    nothing else is new (a lock waiter woken by its predecessor's release).
    What is there comes from the listing, the data from the same request."""
    backend, other = make(), make()
    prefix = f"{ns}/q/"
    a, _ = other.enqueue(prefix, b"a")
    b, _ = other.enqueue(prefix, b"b")
    assert backend.list(prefix) == [a, b]  # the first listing: GetChildren, then a multi-read
    assert other.delete(a.key) is True
    b2 = other.compare_and_set(b.key, b"b2", b.version)
    c, _ = other.enqueue(prefix, b"c")  # a name past the last listing's
    assert b2 is not None
    sent = count_requests(backend)
    assert backend.list(prefix) == [b2, c]
    assert sent == ["_MultiRead"]
    news = [other.enqueue(prefix, str(i).encode())[0] for i in range(20)]  # more than it guesses
    sent.clear()
    assert backend.list(prefix) == [b2, c, *news]
    assert sent == ["_MultiRead", "_MultiRead"]  # the names not foreseen: read in a second request
    sent.clear()
    mine, entries = backend.enqueue(prefix, b"mine")
    assert entries == [b2, c, *news, mine]
    # sent together, answered in order: the directories (this backend never made them: not known
    # to exist; they answer NodeExists), the entry and the listing
    assert sent == ["Create", "Create", "Create2", "_MultiRead"]
    raw.delete(f"/moot/{ns}", recursive=True)  # an operator wipes the tree: names restart
    again, _ = other.enqueue(prefix, b"again")
    assert backend.list(prefix) == [again]
    assert backend.list(f"{ns}/elsewhere/") == []


def test_refresh_is_one_sync_and_a_deleted_record_ends_the_session(
        make: Callable[..., ZooKeeperBackend], raw: KazooClient) -> None:
    """kazoo's pings keep the session; a refresh is one sync (an answer
    proves the server heard from the leader since the call began). The
    session's record is watched instead of read by every refresh: deleted,
    even while the connection was down, it ends the session."""
    backend = make()
    sent = count_requests(backend)
    backend.refresh_session()
    assert sent == ["Sync"]
    session = backend._session
    assert session is not None
    drop_connection(backend)  # kazoo drops its watches with the connection: armed again on reconnecting
    wait_until(lambda: "Exists" in sent, what="the record's watch to be armed again")
    backend.refresh_session()
    assert not session.record_gone
    raw.delete(f"/moot/{_SESSIONS}/{session.id}")
    wait_until(lambda: session.record_gone, what="the record's watch")
    with pytest.raises(SessionExpired):
        backend.refresh_session()


# -- kazoo's own log (moot/backends/zookeeper/connection.py _KazooLog) --

KAZOO_NOISE = """
import logging, socket, sys, threading
from kazoo.protocol.connection import _CONNECTION_DROP
from kazoo.protocol.states import KazooState
import moot
from moot.backends.zookeeper import ZooKeeperBackend
from moot.url import parse_url

if sys.argv[2] == "info":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
backend = ZooKeeperBackend(parse_url(sys.argv[1]), {})
backend.connect(10.0)
backend.open_session(10.0)
zk = backend._conn.zk
states, back = [], threading.Event()
def listener(state):
    states.append(state)
    if KazooState.SUSPENDED in states and state == KazooState.CONNECTED:
        back.set()
zk.add_listener(listener)
zk._call(_CONNECTION_DROP, zk.handler.async_result())  # kazoo reconnects: its warnings
assert back.wait(20), states
backend.close()
with socket.socket() as a, socket.socket() as b:  # bound, never listening: refused
    a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
    url = "zookeeper://127.0.0.1:%d,127.0.0.1:%d" % (a.getsockname()[1], b.getsockname()[1])
    try:
        moot.connect(url, member_id="m", timeout=5)
    except moot.ConnectionLost as exc:
        print(exc)
"""


@pytest.mark.multiprocess
def test_kazoo_warnings_stay_off_stderr_unless_logging_shows_them(zk_url: str) -> None:
    """A reconnection and a refused connect print nothing on the stderr of a
    program that configured no logging (kazoo warned once per try: a dozen
    lines for one outage); moot's error says what happened, once. A program
    that shows INFO still gets kazoo's lines, under moot's logger."""
    import subprocess
    import sys
    from pathlib import Path

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-c", KAZOO_NOISE, zk_url, mode], capture_output=True, text=True,
                              timeout=60, cwd=Path(__file__).resolve().parent.parent)
        assert done.returncode == 0, done.stderr
        return done

    quiet = run("default")
    assert quiet.stderr == ""
    (message,) = quiet.stdout.splitlines()
    assert "refused the connection" in message
    shown = run("info").stderr
    assert "INFO moot.backends.zookeeper.kazoo: Connection dropped" in shown
    assert "WARNING moot.backends.zookeeper.kazoo" not in shown


def test_a_deletion_names_the_live_session_it_was_told_in(make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    """A watch learns that its key was deleted, and in which live session,
    from the deletion's event or from the read that arms it: what lets a
    sole lock waiter skip reading the queue again (``Watch.deleted_while``)."""
    watcher, writer = make(), make()
    session = watcher._session
    assert session is not None
    key = f"{ns}/k"
    first = writer.create(key, b"1", ephemeral=True)
    assert first is not None
    woken = threading.Event()
    watch, unchanged = watcher.watch_unchanged(first, woken.set)
    assert unchanged and watch.deleted_while is None
    changed = writer.compare_and_set(key, b"2", first.version)
    assert changed is not None
    wait_event(woken, what="the call after an update")
    assert watch.deleted_while is None, "an update is no deletion"
    woken.clear()
    assert writer.delete(key) is True
    wait_event(woken, what="the call after the deletion")
    assert watch.deleted_while == session.id
    watch.cancel()
    late, unchanged = watcher.watch_unchanged(changed, threading.Event().set)  # armed once it is gone
    assert not unchanged and late.deleted_while == session.id
    late.cancel()

    # in a later session, a deletion names that session, never the ended one (whose keys are gone)
    third = writer.create(key, b"3")
    assert third is not None
    woken.clear()
    again, unchanged = watcher.watch_unchanged(third, woken.set)
    assert unchanged
    lost = threading.Event()
    watcher.set_session_listener(lost.set)
    assert writer.expire_session(session.id) is True
    wait_event(lost, what="the watcher's session to end")
    watcher.close_session()
    renewed = watcher.open_session(TTL)
    wait_event(woken, what="the call once the watch is armed in the new session")
    woken.clear()
    assert writer.delete(key) is True
    wait_event(woken, what="the call after the deletion in the new session")
    assert again.deleted_while == renewed != session.id
    again.cancel()


def test_a_deletion_with_entries_ahead_is_answered_from_a_listing_read_at_the_event(
        make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    """A lock waiter with more than one entry ahead, once it said so
    (``Watch.will_ask_cleared``), is told whether its way is clear
    (``Watch.cleared_for``) from a listing sent as the deletion's event came,
    not read after its own thread woke: no when an entry ahead remains or
    its own entry is gone, yes when all ahead went and it is still there."""
    watcher, holder = make(), make()
    queue = f"{ns}/q/"

    def deleted(watch: Watch, woken: threading.Event, key: str) -> None:
        assert holder.delete(key) is True
        wait_event(woken, what="the call after the deletion")
        listing = getattr(watch, "listing", None)
        assert listing is not None, "no listing was sent on the deletion's event"
        wait_until(listing.ready, what="the listing sent on the event")

    def armed(mine: Entry, ahead: list[Entry]) -> tuple[Watch, threading.Event]:
        woken = threading.Event()
        watch, unchanged = watcher.watch_unchanged(ahead[-1], woken.set)
        assert unchanged
        watch.will_ask_cleared(mine, ahead)
        return watch, woken

    first, _ = holder.enqueue(queue, b"h")
    second, _ = holder.enqueue(queue, b"h")
    mine, _ = watcher.enqueue(queue, b"w")
    watch, woken = armed(mine, [first, second])
    deleted(watch, woken, second.key)  # the predecessor gave up; the first still holds
    assert not watch.cleared_for(mine, [first, second]), "the first entry is still there"
    watch.cancel()

    third, _ = holder.enqueue(f"{ns}/r/", b"h")
    fourth, _ = holder.enqueue(f"{ns}/r/", b"h")
    late, _ = watcher.enqueue(f"{ns}/r/", b"w")
    watch, woken = armed(late, [third, fourth])
    assert holder.delete(third.key) is True
    deleted(watch, woken, fourth.key)
    assert holder.delete(late.key) is True  # after the listing: the answer is the listing's
    assert watch.cleared_for(late, [third, fourth])
    watch.cancel()

    fifth, _ = holder.enqueue(f"{ns}/s/", b"h")
    sixth, _ = holder.enqueue(f"{ns}/s/", b"h")
    gone, _ = watcher.enqueue(f"{ns}/s/", b"w")
    watch, woken = armed(gone, [fifth, sixth])
    assert holder.delete(fifth.key) is True
    assert holder.delete(gone.key) is True  # before the watched entry goes: it was not there
    deleted(watch, woken, sixth.key)
    assert not watch.cleared_for(gone, [fifth, sixth])
    watch.cancel()


def test_a_first_creation_under_new_directories_sends_them_with_it(
        make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    """A lock or group used for the first time makes its directories in the
    same round trip as its first entry (no existence check, no refused
    creation first); a directory removed behind the backend's back is made
    again."""
    backend, other = make(), make()
    sent = count_requests(backend)
    mine, listed = backend.enqueue(f"{ns}/lock/new/q/", b"w")
    assert [entry.key for entry in listed] == [mine.key]
    assert sent == ["Create"] * 4 + ["Create2", "GetChildren"], sent  # ns, lock, new, q; the entry
    sent.clear()
    second = backend.create(f"{ns}/group/g/m1", b"", ephemeral=True)
    assert second is not None
    assert sent == ["Create", "Create", "Create2"], sent  # group, g (ns is known); the key
    sent.clear()
    backend.create_sequential(f"{ns}/lock/new/q/", b"w")
    assert sent == ["Create2"], sent

    assert backend.delete(mine.key) is True
    assert backend.delete(second.key) is True
    for entry in backend.list(f"{ns}/lock/new/q/"):
        assert backend.delete(entry.key) is True
    other_zk = other._conn.zk  # type: ignore[union-attr]
    other_zk.delete(other._path(f"{ns}/lock"), recursive=True)
    again, _ = backend.enqueue(f"{ns}/lock/new/q/", b"w")
    assert backend.get(again.key) is not None
    assert other.get(again.key) is not None


def waiting(coord: moot.Coordinator, count: int) -> bool:
    info = coord.lock_info("l")
    return info is not None and len(info.waiters) == count


def test_a_sole_waiter_is_served_on_its_predecessors_deletion_without_a_read(zk_url: str, ns: str) -> None:
    """A handoff to the one waiter costs the release and its event: the
    waiter does not read the queue again (its session lived when the holder's entry
    went, so its own entry was there, and none can come before it). A
    waiter that had more entries ahead reads the names in the queue, sent
    as the event came (``Watch.will_ask_cleared``), and nothing more."""
    coords = [moot.connect(zk_url, member_id=f"c{i}", namespace=ns, ttl=TTL) for i in range(3)]
    try:
        locks = [coord.lock("l") for coord in coords]
        assert locks[0].acquire(timeout=5)
        served = [threading.Event() for _ in coords]
        release = [threading.Event() for _ in coords]

        def take(index: int) -> None:
            if locks[index].acquire(timeout=10):
                served[index].set()
                release[index].wait(10)
                locks[index].release()

        threads = []
        for index in (1, 2):
            threads.append(threading.Thread(target=take, args=(index,), daemon=True))
            threads[-1].start()
            wait_until(functools.partial(waiting, coords[0], index), what=f"waiter {index} to queue")
        sent = [count_requests(coord.session.backend) for coord in coords[1:]]  # type: ignore[arg-type]
        last = coords[2].session.backend
        assert isinstance(last, ZooKeeperBackend)
        wait_until(lambda: any(getattr(watch, "wants_listing", False) for watches in list(last._watches.values())
                               for watch in watches), what="the last waiter to arm its watch")
        sent[1].clear()  # its enqueue and its watch's arming
        locks[0].release()
        wait_event(served[1], what="the first waiter to be served")
        # no listing; a GetData may go out: the re-arm that watches the deleted key for its
        # re-creation (run on the dispatcher, it can come before the served waiter cancels its watch)
        assert not {"GetChildren", "_MultiRead"} & set(sent[0]) and set(sent[0]) <= {"GetData"}, \
            f"the waiter next in line sent {sent[0]} once woken"
        assert not served[2].is_set()
        release[1].set()
        wait_event(served[2], what="the second waiter to be served")
        assert "GetChildren" in sent[1] and "_MultiRead" not in sent[1], \
            f"the waiter that had two ahead sent {sent[1]}"
        release[2].set()
        for thread in threads:
            thread.join(10)
    finally:
        for coord in coords:
            coord.close()


def _lock_dirs(raw: KazooClient, ns: str) -> list[str]:
    """The znodes under the namespace's lock directory (its lock names)."""
    return raw.get_children(f"/moot/{ns}/lock") if raw.exists(f"/moot/{ns}/lock") else []


def test_released_locks_leave_no_znodes_once_swept(
        zk_url: str, raw: KazooClient, ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock per object (a volume) must not leave two znodes per object ever
    locked: the name's and queue's parent znodes go a while after the last
    release; a lock still held keeps its own; a name used again is made
    again, and its fencing token still grows."""
    monkeypatch.setattr(sweeper, "SWEEP_AFTER", 0.2)
    with moot.connect(zk_url, member_id="a", namespace=ns, ttl=TTL) as coord:
        kept = coord.lock("kept")
        assert kept.acquire(timeout=5)
        tokens = {}
        for i in range(20):
            lock = coord.lock(f"vol-{i}")
            assert lock.acquire(timeout=5)
            tokens[i] = lock.token
            lock.release()
        assert len(_lock_dirs(raw, ns)) == 21
        wait_until(lambda: _lock_dirs(raw, ns) == ["kept"], timeout=10, what="the released locks' znodes to go")
        assert raw.get_children(f"/moot/{ns}/lock/kept/q") != []
        assert [info.name for info in coord.locks()] == ["kept"]
        again = coord.lock("vol-0")
        assert again.acquire(timeout=5)
        assert again.token > max(tokens.values())
        again.release()
        kept.release()


def test_close_removes_the_znodes_of_the_locks_it_released_at_once(
        zk_url: str, raw: KazooClient, ns: str) -> None:
    """close() releases the held locks and removes their parent znodes
    before it returns, without waiting for the sweep's delay; a lock another
    session still waits on keeps its own."""
    other = moot.connect(zk_url, member_id="b", namespace=ns, ttl=TTL)
    try:
        coord = moot.connect(zk_url, member_id="a", namespace=ns, ttl=TTL)
        for name in ("x", "y", "busy"):
            assert coord.lock(name).acquire(timeout=5)
        waiter = threading.Thread(target=lambda: other.lock("busy").acquire(timeout=10), daemon=True)
        waiter.start()
        wait_until(lambda: getattr(coord.lock_info("busy"), "waiters", None), what="the other session to wait")
        coord.close()
        assert _lock_dirs(raw, ns) == ["busy"]
        waiter.join(10)
        assert [info.name for info in other.locks()] == ["busy"]
    finally:
        other.close()
    assert _lock_dirs(raw, ns) == []


def test_removing_released_directories_while_others_acquire_never_admits_two_holders(
        zk_url: str, raw: KazooClient, ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the sweep at once after each release, three sessions take and
    release two locks in a loop: the queue directories are removed and made
    again under the creations racing them, and each lock still has one
    holder at a time with tokens that only grow."""
    monkeypatch.setattr(sweeper, "SWEEP_AFTER", 0.0)
    coords = [moot.connect(zk_url, member_id=f"c{i}", namespace=ns, ttl=TTL) for i in range(3)]
    guard = threading.Lock()
    holders: dict[str, str | None] = {"p": None, "q": None}
    last_token = {"p": 0, "q": 0}
    incarnations: dict[str, set[int]] = {"p": set(), "q": set()}
    failures: list[str] = []
    stop = time.monotonic() + 3.0

    def run(coord: moot.Coordinator) -> None:
        try:
            while time.monotonic() < stop:
                for name in ("p", "q"):
                    lock = coord.lock(name)
                    assert lock.acquire(timeout=10)
                    with guard:
                        if holders[name] is not None:
                            failures.append(f"{coord.member_id} took {name} held by {holders[name]}")
                        if lock.token <= last_token[name]:
                            failures.append(f"token {lock.token} of {name} after {last_token[name]}")
                        holders[name], last_token[name] = coord.member_id, lock.token
                    stat = raw.exists(f"/moot/{ns}/lock/{name}/q")
                    if stat is not None:
                        incarnations[name].add(stat.czxid)
                    with guard:
                        holders[name] = None
                    lock.release()
        except BaseException as exc:  # reported below, with where it came from
            failures.append("".join(traceback.format_exception(exc)))

    threads = [threading.Thread(target=run, args=(coord,), daemon=True) for coord in coords]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        for coord in coords:
            coord.close()
    assert failures == [], "\n".join(failures)
    assert all(len(seen) > 1 for seen in incarnations.values()), \
        f"the directories were never removed under the racing acquisitions: {incarnations}"


def test_a_session_that_knew_a_removed_lock_reads_and_takes_it_again(
        zk_url: str, raw: KazooClient, ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process remembers the lock's directories as made and their
    names as listed; once they are removed, its listing finds the lock free
    and its acquire makes them again."""
    monkeypatch.setattr(sweeper, "SWEEP_AFTER", 0.0)
    with moot.connect(zk_url, member_id="a", namespace=ns, ttl=TTL) as a, \
            moot.connect(zk_url, member_id="b", namespace=ns, ttl=TTL) as b:
        lock = b.lock("x")
        assert lock.acquire(timeout=5)
        info = a.lock_info("x")
        assert info is not None and info.holder == "b"
        lock.release()
        wait_until(lambda: _lock_dirs(raw, ns) == [], what="the released lock's znodes to go")
        assert a.lock_info("x") is None and a.locks() == []
        again = a.lock("x")
        assert again.acquire(timeout=5)
        info = a.lock_info("x")
        assert info is not None and info.holder == "a"
        again.release()
