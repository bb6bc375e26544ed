"""The requests the Redis backend sends, counted by the server (MONITOR):
a lock handoff is the holder's release and the waiter's one read; a waiter's
ended watch costs no UNSUBSCRIBE of its own (they are batched, and a batch is
the pub/sub connection's keepalive probe); ``names()`` is one script call that
leaves out the entries of an expired session (and removes them, as ``list()``
does) without sending their values.

The server is ``$MOOT_TEST_REDIS_URL`` if set, else one started by
``tests/servers.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import moot
from moot.backends.redis import RedisBackend, dir_key, listener
from tests.conftest import MakeBackend
from tests.waiting import BOUND, wait_event, wait_until

Make = Callable[..., RedisBackend]


@pytest.fixture(scope="module")
def redis_url(server: Callable[[str], str]) -> str:
    return server("redis")


@pytest.fixture
def make(redis_url: str, open_backend: MakeBackend) -> Make:
    return lambda **options: open_backend(redis_url, timeout=5.0, **options)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Monitor:
    """MONITOR on the server, read in the test's thread; every read is bounded."""

    def __init__(self, url: str):
        self._client = redis.Redis.from_url(url, socket_timeout=BOUND)
        self._marking = redis.Redis.from_url(url)
        self._marking.ping()  # connected before MONITOR starts: its handshake is not seen
        self._monitor = self._client.monitor()
        self._monitor.__enter__()

    def next(self) -> dict[str, Any]:
        line: dict[str, Any] = self._monitor.next_command()
        return line

    def until_now(self) -> list[dict[str, Any]]:
        """Every command seen from here until now (a marker sent now)."""
        marker = f"moot-test-end-{uuid.uuid4().hex}"
        self._marking.echo(marker)
        lines = []
        while marker not in (line := self.next())["command"]:
            lines.append(line)
        return lines

    def close(self) -> None:
        self._monitor.__exit__(None, None, None)
        self._client.close()
        self._marking.close()


@pytest.fixture
def monitor(redis_url: str) -> Iterator[Callable[[], Monitor]]:
    made: list[Monitor] = []

    def start() -> Monitor:
        made.append(Monitor(redis_url))
        return made[-1]

    yield start
    for one in made:
        one.close()


def words(line: dict[str, Any]) -> list[str]:
    return [word.strip('"') for word in line["command"].split(" ")]


def backend_of(coord: moot.Coordinator) -> RedisBackend:
    backend = coord.backend
    assert isinstance(backend, RedisBackend)
    return backend


def ports(*backends: RedisBackend) -> set[str]:
    """Client ports of the backends' connections: commands and pub/sub."""
    found = set()
    for backend in backends:
        assert backend._pool is not None and backend._listener is not None
        found |= {str(sock.getsockname()[1]) for sock in backend._pool.sockets()}
        if backend._listener._sock is not None:
            found.add(str(backend._listener._sock.getsockname()[1]))
    return found


def sent_by(lines: list[dict[str, Any]], *backends: RedisBackend) -> list[list[str]]:
    """The commands (first two words) of ``lines`` that ``backends`` sent, but heartbeats."""
    mine = ports(*backends)
    return [words(line)[:2] for line in lines
            if line["client_type"] == "tcp" and line["client_port"] in mine and words(line)[0] != "PEXPIRE"]


def test_a_handoff_is_the_release_and_the_waiters_one_read(
    redis_url: str, monitor: Callable[[], Monitor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Released with one script call, the lock's next waiter is woken and
    reads its queue with one script call (its entry first: served with its
    token). Nothing else is sent by either side: the waiter's ended watch is
    unsubscribed later, in a batch (see the next test; put off here)."""
    monkeypatch.setattr(listener, "_PING_INTERVAL", 3600.0)
    monkeypatch.setattr(listener, "_UNSUBSCRIBE_DELAY", 3600.0)
    namespace = uuid.uuid4().hex
    with moot.connect(redis_url, member_id="a", ttl=60, namespace=namespace) as a, \
            moot.connect(redis_url, member_id="b", ttl=60, namespace=namespace) as b:
        holder, waiter = a.lock("x"), b.lock("x")
        for lock in (holder, waiter):  # loads the scripts
            assert lock.acquire(timeout=BOUND)
            lock.release()
        assert backend_of(b).list(f"{namespace}/") == []  # and the one a waiter reads its queue with
        assert holder.acquire(timeout=BOUND)
        first = holder.token
        shas = {name: sha.decode() for name, sha in backend_of(b)._shas.items()}
        watching = monitor()
        served = threading.Event()

        def wait() -> None:
            if waiter.acquire(timeout=BOUND):
                served.set()

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        # The waiter queues, watches the holder's entry, reads it again, and
        # its listener re-checks the watched entry once subscribed: then it waits.
        seen: set[str] = set()
        while not {shas["get"], shas["recheck"]} <= seen:
            seen.update(words(watching.next())[1:2])
        counted = monitor()
        holder.release()
        wait_event(served, what="the waiter served once the holder released")
        thread.join(BOUND)
        sent = sent_by(counted.until_now(), backend_of(a), backend_of(b))
        assert sent == [["EVALSHA", shas["delete"]], ["EVALSHA", shas["list"]]]
        assert waiter.is_held and first is not None and waiter.token is not None and waiter.token > first
        waiter.release()


def test_ended_watches_are_unsubscribed_together_as_the_keepalive_probe(
    make: Make, monitor: Callable[[], Monitor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watches that end are unsubscribed in one UNSUBSCRIBE, no earlier than
    the delay, which is the probe interval; that UNSUBSCRIBE is the probe
    (no PING besides it: the next one comes an interval after its replies)."""
    interval = 2.0
    monkeypatch.setattr(listener, "_PING_INTERVAL", interval)
    monkeypatch.setattr(listener, "_UNSUBSCRIBE_DELAY", interval)
    backend = make()
    assert backend._listener is not None and backend._listener._sock is not None
    port = str(backend._listener._sock.getsockname()[1])
    prefix = f"t-{uuid.uuid4().hex[:12]}/"
    channels = {f"moot:0:{prefix}{name}" for name in ("k1", "k2")}
    watching = monitor()
    watches = [backend.watch(f"{prefix}{name}", lambda: None) for name in ("k1", "k2")]
    for watch in watches:
        watch.cancel()
    sent: list[tuple[float, list[str]]] = []
    while len(sent) < 4:  # SUBSCRIBE k1, SUBSCRIBE k2, then the probe, then the next probe
        line = watching.next()
        if line["client_type"] == "tcp" and line["client_port"] == port and (sent or words(line)[0] != "PING"):
            sent.append((float(line["time"]), words(line)))  # (a probe before the watches does not count)
    assert [command[0] for _, command in sent] == ["SUBSCRIBE", "SUBSCRIBE", "UNSUBSCRIBE", "PING"]
    (subscribed, _), (unsubscribed, unsubscribe), (pinged, _) = sent[1:]
    assert set(unsubscribe[1:]) == channels and len(unsubscribe) == 3
    assert unsubscribed - subscribed >= interval  # not before the delay (server clock)
    assert pinged - unsubscribed >= interval  # the UNSUBSCRIBE was the probe


def test_names_is_one_script_call_without_an_expired_sessions_entries(
    make: Make, raw: redis.Redis, redis_url: str, monitor: Callable[[], Monitor]
) -> None:
    reader, owner = make(), make()
    reader.open_session(30)
    directory = f"t-{uuid.uuid4().hex[:12]}/group/g/members/"
    session = owner.open_session(1.0)  # never refreshed
    assert owner.create(f"{directory}dying", b"{}", ephemeral=True) is not None
    for name in ("m2", "m10", "m1"):
        assert reader.create(f"{directory}{name}", b'{"capabilities": "' + b"x" * 1000 + b'"}',
                             ephemeral=name != "m10") is not None
    assert reader.create(f"{directory}m1/deeper", b"not directly under it") is not None
    assert reader.names(directory) == ["dying", "m1", "m10", "m2"]
    wait_until(lambda: raw.exists(f"moot:s:{session}") == 0, what="the unrefreshed session to expire")
    assert raw.hget(dir_key(directory), "dying") is not None  # expired: nothing was written
    counted = monitor()
    assert reader.names(directory) == ["m1", "m10", "m2"]
    assert sent_by(counted.until_now(), reader) == [["EVALSHA", reader._shas["names"].decode()]]
    assert raw.hget(dir_key(directory), "dying") is None  # removed, as list() removes it
    assert [entry.key for entry in reader.list(directory)] == \
        [f"{directory}{name}" for name in ("m1", "m1/deeper", "m10", "m2")]
    assert reader.names(f"t-{uuid.uuid4().hex[:12]}/missing/") == []


@pytest.mark.parametrize("sessions", [2, 100])
def test_member_ids_is_one_script_call_however_many_sessions(
    make: Make, redis_url: str, monitor: Callable[[], Monitor], sessions: int
) -> None:
    """group.member_ids() of 100 members in 2 sessions or in 100: the reader
    sends one script call. Inside it, the first call checks each distinct
    owner's session once (one PTTL per session, not per member) and notes
    until when they all live; the next calls, with no entry written since,
    check none."""
    namespace = uuid.uuid4().hex
    owner = make()
    with moot.connect(redis_url, member_id="observer", namespace=namespace, ttl=30) as observer:
        group = observer.group("big")
        group.create()
        members = [f"m{i:03d}" for i in range(100)]
        for i, member in enumerate(members):
            if i % (100 // sessions) == 0:
                owner.open_session(30)
            assert owner.create(f"{group._members_prefix}{member}", b"{}", ephemeral=True) is not None
        reader = backend_of(observer)
        assert reader.names(f"{namespace}/missing/") == []  # the server has the script from now on
        for inner in (["HGETALL", "HSET", *["PTTL"] * sessions, "TIME"], ["HGETALL", "TIME"], ["HGETALL", "TIME"]):
            counted = monitor()
            assert group.member_ids() == set(members)
            lines = counted.until_now()
            assert sent_by(lines, reader) == [["EVALSHA", reader._shas["names"].decode()]]
            assert sorted(words(line)[0] for line in lines if line["client_type"] == "lua") == inner
            counted.close()


def test_names_checks_the_sessions_again_once_one_may_have_expired(make: Make, raw: redis.Redis) -> None:
    """names() notes until when every owner's session lives: it never lists
    the entry of a session that expired, ended, or was created since."""
    reader, owner, dying = make(), make(), make()
    directory = f"t-{uuid.uuid4().hex[:12]}/group/g/members/"
    owner.open_session(30)
    filler = [f"z{i:02d}" for i in range(32)]  # enough entries for a note to be left
    for name in filler:
        assert owner.create(f"{directory}{name}", b"{}", ephemeral=True) is not None
    session = dying.open_session(1.0)  # never refreshed
    assert owner.create(f"{directory}a", b"{}", ephemeral=True) is not None
    assert dying.create(f"{directory}b", b"{}", ephemeral=True) is not None
    assert reader.names(directory) == ["a", "b", *filler]
    assert raw.hget(dir_key(directory), "#a") is not None  # the note
    assert reader.names(directory) == ["a", "b", *filler]
    assert list_names(reader, directory) == ["a", "b", *filler]
    wait_until(lambda: raw.exists(f"moot:s:{session}") == 0, what="the unrefreshed session to expire")
    assert raw.hget(dir_key(directory), "b") is not None  # expired: nothing was written
    assert list_names(reader, directory) == ["a", *filler]  # the note was until b's session expired
    assert raw.hget(dir_key(directory), "b") is None  # checked again, and removed
    assert reader.names(directory) == ["a", *filler]
    assert dying.open_session(1.0) and dying.create(f"{directory}c", b"{}", ephemeral=True) is not None
    assert reader.names(directory) == ["a", "c", *filler]  # written since the note: checked again
    assert reader.names(directory) == ["a", "c", *filler]
    assert list_names(reader, directory) == ["a", "c", *filler]
    assert dying._session is not None
    assert reader.expire_session(dying._session[0]) is True  # removes c at once, the note still valid
    assert reader.names(directory) == ["a", *filler]
    assert list_names(reader, directory) == ["a", *filler]


def list_names(backend: RedisBackend, directory: str) -> list[str]:
    return [entry.key[len(directory):] for entry in backend.list(directory)]
