"""What the etcd backend guarantees beyond the conformance suite: one
keep-alive call per heartbeat, one transaction per enqueue, leases that take
their keys (and wake watchers) with them, one watch thread however many
watches, recovery from a server restart, the ``etcd3+http(s)`` spellings,
a URL root, and etcd authentication.

The server is ``$MOOT_TEST_ETCD_URL`` if set, else one started by
``tests/servers.py`` (a missing etcd fails these tests; they never skip).
Tests that restart a server or turn on authentication start their own.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import moot
from moot.backends.base import Entry
from moot.backends.etcd import EtcdBackend
from moot.backends.etcd.watch import _EntryWatch
from moot.errors import ConfigurationError, ConnectionLost, InvalidURL, SessionExpired
from moot.url import parse_url
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import wait_event, wait_until

TTL = 2.0


@pytest.fixture(scope="module")
def etcd_url(server: Callable[[str], str]) -> str:
    """The run's shared etcd server (``MOOT_TEST_ETCD_URL`` if set)."""
    return server("etcd")


@pytest.fixture
def make(etcd_url: str, open_backend: MakeBackend) -> Callable[..., EtcdBackend]:
    """``make(url=etcd_url)``: a connected backend, closed after the test."""
    return lambda url=etcd_url, **options: open_backend(url, timeout=5.0, **options)


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}/"


def count_calls(backend: EtcdBackend) -> list[str]:
    """Record the path of every request ``backend`` makes from now on, as it is answered."""
    calls: list[str] = []
    real = backend._http.call

    def counting(path: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return real(path, *args, **kwargs)
        finally:
            calls.append(path)

    backend._http.call = counting  # type: ignore[method-assign]
    return calls


def http_base(url: str) -> str:
    return "http://" + url.split("://", 1)[1].split(",")[0].split("/")[0]


def etcd_post(url: str, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(f"{http_base(url)}/v3/{path}", data=json.dumps(body).encode())
    if token is not None:
        request.add_header("Authorization", token)
    with urllib.request.urlopen(request, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def server_watchers(url: str) -> int:
    with urllib.request.urlopen(f"{http_base(url)}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("etcd_debugging_mvcc_watcher_total "):
                return int(float(line.split()[1]))
    raise AssertionError("etcd reports no watcher count")


def test_heartbeat_is_one_call_however_many_keys(make: Callable[..., EtcdBackend], prefix: str) -> None:
    backend = make()
    backend.open_session(TTL)
    for i in range(100):
        assert backend.create(f"{prefix}{i}", b"x", ephemeral=True) is not None
    calls = count_calls(backend)
    end = time.monotonic() + 2 * TTL  # outlive the TTL on refreshes alone
    while time.monotonic() < end:
        before = len(calls)
        backend.refresh_session()
        assert calls[before:] == ["lease/keepalive"]
        time.sleep(TTL / 4)
    assert len(backend.list(prefix)) == 100
    wait_until(lambda: not backend.list(prefix), what="the keys to go with the unrefreshed lease")
    with pytest.raises(SessionExpired):
        backend.refresh_session()


def test_enqueue_is_one_transaction(make: Callable[..., EtcdBackend], prefix: str) -> None:
    a, b = make(), make()
    a.open_session(TTL)
    b.open_session(TTL)
    calls = count_calls(a)
    first, queue = a.enqueue(prefix, b"a")
    assert calls == ["kv/txn"]
    assert queue == [first]
    second, queue = b.enqueue(prefix, b"b")
    assert second.seq is not None and first.seq is not None and second.seq > first.seq
    assert sorted(queue, key=lambda e: e.seq or 0) == [first, second]
    # seq is the key's create_revision, also as list() and get() report it
    assert {e.key: e.seq for e in b.list(prefix)} == {first.key: first.seq, second.key: second.seq}
    assert a.get(second.key) == second
    assert first.owner is not None and first.owner != second.owner


def test_lease_revoke_and_expiry_fire_watches(make: Callable[..., EtcdBackend], prefix: str) -> None:
    owner, watcher = make(), make()
    lost = threading.Event()
    owner.set_session_listener(lost.set)
    session = owner.open_session(TTL)
    assert owner.create(f"{prefix}k", b"", ephemeral=True) is not None
    on_key, on_prefix = threading.Event(), threading.Event()
    watches = [watcher.watch(f"{prefix}k", on_key.set), watcher.watch(prefix, on_prefix.set)]
    assert watcher.session_last_seen(session) is not None
    assert owner.expire_session(session) is True
    wait_event(on_key, what="the key watch to see the revoked lease's key go")
    wait_event(on_prefix, what="the prefix watch to see it go")
    wait_event(lost, what="the owner's session listener")
    assert watcher.session_last_seen(session) is None
    assert watcher.expire_session(session) is False
    with pytest.raises(SessionExpired):
        owner.refresh_session()
    with pytest.raises(SessionExpired):
        owner.create(f"{prefix}k", b"", ephemeral=True)

    for watch in watches:
        watch.cancel()
    on_key.clear()
    owner.close_session()
    owner.open_session(TTL)  # not refreshed: it expires on the server's clock
    assert owner.create(f"{prefix}k", b"", ephemeral=True) is not None
    watcher.watch(f"{prefix}k", on_key.set)
    wait_event(on_key, what="the key watch to see the expired lease's key go")
    assert owner.get(f"{prefix}k") is None


def test_a_deletion_tells_whether_the_way_is_clear_for_a_queue_entry(
    make: Callable[..., EtcdBackend], prefix: str
) -> None:
    """A watch on a queue entry says whether, when the watched entry went,
    the entries ahead of another one were all gone and that one still there
    (``Watch.cleared_for``), from the queue's stream alone: yes when the
    stream told those deletions and every change since that entry was made;
    no when an entry ahead is still there, or its lease went first; not
    known (no) when the stream was confirmed after a later change."""
    watcher, holder, waiter = make(), make(), make()
    for backend in (watcher, holder, waiter):
        backend.open_session(TTL)
    queue = f"{prefix}q/"

    def watch_deletion(entry: Entry) -> _EntryWatch:
        watch, unchanged = watcher.watch_unchanged(entry, lambda: None)
        assert unchanged and isinstance(watch, _EntryWatch)
        return watch

    def told(watch: _EntryWatch, what: str) -> None:
        """Wait for the deletion to be told (the key's creation may be told
        later than it happened, and call the watch too)."""
        wait_until(lambda: watch.deleted_at is not None, what=what)

    first, _ = holder.enqueue(queue, b"h")
    opening = watch_deletion(first)  # confirms the queue's stream
    second, _ = holder.enqueue(queue, b"h")
    mine, _ = waiter.enqueue(queue, b"w")
    watch = watch_deletion(second)
    assert holder.delete(second.key) is True
    told(watch, "the second's deletion")
    assert not watch.cleared_for(mine, [first, second]), "the first entry is still there"
    assert holder.delete(first.key) is True
    third, _ = holder.enqueue(queue, b"h")
    fourth, _ = holder.enqueue(queue, b"h")
    watch = watch_deletion(fourth)
    assert holder.delete(third.key) is True
    assert not watch.cleared_for(mine, [third, fourth]), "the watched entry has not gone"
    assert holder.delete(fourth.key) is True
    told(watch, "the fourth's deletion")
    assert watch.cleared_for(mine, [third, fourth])
    assert watch.cleared_for(mine, [first, second, third, fourth])

    # the waiter's lease goes before the watched entry: its entry was not there
    fifth, _ = holder.enqueue(queue, b"h")
    watch = watch_deletion(fifth)
    waiter.close_session()  # revokes its lease, and its entry with it
    wait_until(lambda: watcher.get(mine.key) is None, what="the waiter's entry to go with its lease")
    assert holder.delete(fifth.key) is True
    told(watch, "the fifth's deletion")
    assert not watch.cleared_for(mine, [fifth])

    # a stream confirmed after a later change cannot tell
    waiter.open_session(TTL)
    other = f"{prefix}other/"
    sixth, _ = holder.enqueue(other, b"h")
    late, _ = waiter.enqueue(other, b"w")
    assert holder.create(f"{prefix}later", b"") is not None
    watch = watch_deletion(sixth)
    assert holder.delete(sixth.key) is True
    told(watch, "the deletion on the late stream")
    assert watcher.get(late.key) is not None
    assert not watch.cleared_for(late, [sixth]), "the stream was confirmed after a later change"
    opening.cancel()


def test_a_sole_waiter_is_served_on_its_predecessors_deletion_without_a_read(etcd_url: str) -> None:
    """A handoff to the one waiter costs the release and its event: the
    waiter does not read the queue again, on its first wait (whose stream
    is confirmed with no change after the waiter queued) or a later one."""
    ns = f"t-{uuid.uuid4().hex[:12]}"
    coords = [moot.connect(etcd_url, member_id=f"c{i}", namespace=ns, ttl=TTL) for i in range(2)]
    try:
        locks = [coord.lock("l") for coord in coords]
        calls = count_calls(coords[1].session.backend)  # type: ignore[arg-type]

        def handoff() -> list[str]:
            """c0 holds, c1 waits and is served on c0's release: c1's calls meanwhile."""
            assert locks[0].acquire(timeout=5)
            served = threading.Event()

            def take() -> None:
                if locks[1].acquire(timeout=10):
                    served.set()

            thread = threading.Thread(target=take, daemon=True)
            del calls[:]
            thread.start()
            wait_until(lambda: len(calls) == 2, what="c1 to queue and arm its watch")  # released sooner: it reads
            locks[0].release()
            wait_event(served, what="c1 to be served")
            thread.join(5)
            sent = list(calls)
            locks[1].release()
            return sent

        for _ in range(2):
            assert handoff() == ["kv/txn", "kv/range"], "enqueue, and the read that arms the watch: nothing once woken"
    finally:
        for coord in coords:
            coord.close()


def test_one_thread_for_all_watches_and_cancel_is_prompt(
    make: Callable[..., EtcdBackend], prefix: str, etcd_url: str
) -> None:
    backend = make()
    baseline_threads = threading.active_count()
    baseline_watchers = server_watchers(etcd_url)
    fired: list[int] = []
    watches = [backend.watch(f"{prefix}{i}", functools.partial(fired.append, i)) for i in range(20)]
    assert threading.active_count() == baseline_threads
    wait_until(lambda: server_watchers(etcd_url) >= baseline_watchers + 20, what="20 watchers on etcd")
    backend.create(f"{prefix}7", b"")
    wait_until(lambda: fired == [7], what="the watch on key 7 alone to fire")
    for watch in watches:
        watch.cancel()
        watch.cancel()  # idempotent
    wait_until(lambda: server_watchers(etcd_url) <= baseline_watchers, what="etcd to drop the watchers")
    backend.delete(f"{prefix}7")
    assert threading.active_count() == baseline_threads
    assert fired == [7]


def test_watch_and_session_survive_a_server_restart(make: Callable[..., EtcdBackend], prefix: str) -> None:
    cluster = servers.start_cluster("etcd", size=1)
    try:
        backend = make(cluster.url)
        backend.open_session(10.0)
        entry = backend.create(f"{prefix}k", b"1", ephemeral=True)
        assert entry is not None
        woken = threading.Event()
        backend.watch(f"{prefix}k", woken.set)
        cluster.kill(cluster.members[0])
        with pytest.raises(ConnectionLost):
            backend.get(f"{prefix}k")
        cluster.restart(cluster.members[0])
        wait_until(lambda: woken.is_set(), what="the watch to be reopened (and fire)")
        backend.refresh_session()
        woken.clear()
        assert backend.compare_and_set(entry.key, b"2", entry.version) is not None
        wait_event(woken, what="the reopened watch to see a change")
    finally:
        cluster.stop()


def test_etcd3_spellings_and_url_root(etcd_url: str, make: Callable[..., EtcdBackend], prefix: str) -> None:
    address = etcd_url.split("://", 1)[1].rstrip("/")
    coord = moot.connect(f"etcd3+http://{address}", member_id="m", ttl=TTL, namespace=prefix[:-1])
    with coord, coord.lock("l") as held:
        assert held.token is not None and coord.lock_info("l") is not None
    rooted, plain = make(f"etcd://{address}/{prefix}app"), make()
    assert rooted.create("k", b"v") is not None
    assert [e.key for e in rooted.list("")] == ["k"]
    assert plain.get(f"{prefix}app/k") is not None
    # etcd3+https speaks TLS: against this plain-HTTP server it cannot connect
    with pytest.raises(ConnectionLost):
        make(f"etcd3+https://{address}")
    with pytest.raises(ConfigurationError):
        make(f"etcd://{address}", tls="true", ca_cert="/nonexistent/ca.pem")


@pytest.mark.parametrize("options", [
    {"tls": "treu"}, {"tls": "true", "verify": "maybe"}, {"verify": "false"},  # verify without TLS
    {"ca_cert": "/tmp/ca.pem"}, {"cert_cert": "/tmp/c.pem"},  # a TLS option without TLS
    {"tls": "true", "cert": "/a.pem", "cert_cert": "/b.pem"},  # one option under two names
    {"tls": "true", "cert_key": "/nonexistent/k.pem"},  # a key without its certificate
    {"tls": True, "ca_cert": "/nonexistent/ca.pem"}, {"tls": 1},
])
def test_bad_tls_options_fail_before_any_io(options: dict[str, object]) -> None:
    """The shared TLS vocabulary (tls, ca_cert, cert, key, verify; old names
    cert_cert and cert_key): every bad option is refused when the backend is made."""
    with pytest.raises(InvalidURL):
        EtcdBackend(parse_url("etcd://127.0.0.1:1"), options)
    with pytest.raises(InvalidURL):
        EtcdBackend(parse_url("etcd3+https://127.0.0.1:1"), {"tls": "false"})


def test_password_authentication(make: Callable[..., EtcdBackend], prefix: str) -> None:
    cluster = servers.start_cluster("etcd", size=1)
    try:
        url = cluster.url
        etcd_post(url, "auth/user/add", {"name": "root", "password": "s3cret"})
        etcd_post(url, "auth/user/grant", {"user": "root", "role": "root"})
        etcd_post(url, "auth/enable", {})
        address = url.split("://", 1)[1]
        backend = make(f"etcd://root:s3cret@{address}")
        backend.open_session(TTL)
        woken = threading.Event()
        backend.watch(f"{prefix}k", woken.set)
        assert backend.create(f"{prefix}k", b"", ephemeral=True) is not None
        wait_event(woken, what="an authenticated watch to fire")
        backend._http._token = "expired-token"  # a new token is fetched on demand
        assert backend.get(f"{prefix}k") is not None
        backend._http._token = "expired-token"
        woken.clear()
        backend.watch(f"{prefix}k", woken.set)
        assert backend.delete(f"{prefix}k") is True
        wait_event(woken, what="a watch opened with an expired token to fire")
        with pytest.raises(ConfigurationError) as refused:
            make(f"etcd://root:wrong-password@{address}")
        assert "wrong-password" not in str(refused.value)
    finally:
        cluster.stop()
