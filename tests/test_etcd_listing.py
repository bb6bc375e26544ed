"""``names()`` on etcd (``group.member_ids()``): one request per call
whatever the number of members and of their sessions (leases), counted by
etcd itself; after the first read only the keys created since come back; a
member whose lease was revoked or expired, or whose key was deleted (and
created again), is never listed.

These tests start their own etcd (nothing else talks to it, so etcd's
counts of the calls it served are the backend's alone).
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import moot
from moot.backends.etcd import EtcdBackend
from moot.backends.etcd import backend as etcd_backend
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def own_etcd() -> Iterator[str]:
    cluster = servers.start_cluster("etcd", size=1)
    yield cluster.url
    cluster.stop()


@pytest.fixture
def make(own_etcd: str, open_backend: MakeBackend) -> Callable[[], EtcdBackend]:
    return lambda: open_backend(own_etcd, timeout=5.0)


@pytest.fixture
def directory() -> str:
    return f"t-{uuid.uuid4().hex[:12]}/group/g/members/"


_STARTED = re.compile(r'^grpc_server_started_total\{grpc_method="(\w+)",grpc_service="etcdserverpb\.KV",.*\} (\S+)$')


def kv_calls(url: str) -> dict[str, int]:
    """etcd's own count of the KV calls it served, by method (Range, Txn, ...)."""
    address = url.split("://", 1)[1].split(",")[0].split("/")[0]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        match = _STARTED.match(line)
        if match:
            found[match.group(1)] = int(float(match.group(2)))
    return found


def served_during(url: str, action: Callable[[], Any]) -> dict[str, int]:
    before = kv_calls(url)
    action()
    after = kv_calls(url)
    return {method: after[method] - before.get(method, 0) for method in after if after[method] != before.get(method, 0)}


def answers(backend: EtcdBackend) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Record (path, request, answer) of every request ``backend`` makes from now on."""
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    real = backend._http.call

    def recording(path: str, body: Any = None, **kwargs: Any) -> Any:
        answer = real(path, body, **kwargs)
        seen.append((path, body, answer))
        return answer

    backend._http.call = recording  # type: ignore[method-assign]
    return seen


def join_with_own_sessions(owner: EtcdBackend, directory: str, members: list[str], per_session: int = 1) -> None:
    """``per_session`` members per lease (the owner grants a new one for
    each group of them; they expire on their TTL, never refreshed)."""
    for i, member in enumerate(members):
        if i % per_session == 0:
            owner.open_session(30)
        assert owner.create(f"{directory}{member}", b"{}", ephemeral=True) is not None


@pytest.mark.parametrize("owners", [4, 200])
def test_member_ids_is_one_range_call_however_many_sessions(own_etcd: str, make: Callable[[], EtcdBackend],
                                                             owners: int) -> None:
    """group.member_ids() of a group of 200 members in 5 sessions or in 200:
    etcd serves exactly one Range per call (no Txn, no lease lookup), and
    after the first call its answer carries no key already listed."""
    namespace = f"t{uuid.uuid4().hex[:10]}"
    ids = [f"m{i:03d}" for i in range(200)]
    with moot.connect(own_etcd, member_id="observer", namespace=namespace, ttl=30) as observer:
        group = observer.group("big")
        with moot.connect(own_etcd, member_id=ids[0], namespace=namespace, ttl=30) as member:
            member.group("big").join({"a": "member with its own coordinator"})
            join_with_own_sessions(make(), group._members_prefix, ids[1:], per_session=200 // owners)
            assert served_during(own_etcd, group.member_ids) == {"Range": 1}
            backend = observer.backend
            assert isinstance(backend, EtcdBackend)
            seen = answers(backend)
            listed: list[set[str]] = []
            assert served_during(own_etcd, lambda: listed.extend(group.member_ids() for _ in range(5))) == \
                {"Range": 5}
            assert listed == [set(ids)] * 5
            assert [path for path, _, _ in seen] == ["kv/range"] * 5
            assert all(not answer.get("kvs") and int(answer["count"]) == 200 for _, _, answer in seen)
            assert served_during(own_etcd, group.members).get("Range") == 1


FILLER = [f"z{i:02d}" for i in range(etcd_backend._KEEP_FROM)]  # enough keys for a range to be kept


def test_names_stays_exact_as_members_come_and_go(make: Callable[[], EtcdBackend], own_etcd: str,
                                                  directory: str) -> None:
    reader, owner, other = make(), make(), make()
    reader.open_session(30)
    for name in FILLER:
        assert reader.create(f"{directory}{name}", b"") is not None
    join_with_own_sessions(owner, directory, ["a", "b", "c"])
    assert reader.create(f"{directory}a/deeper", b"not directly under it") is not None
    assert reader.names(directory) == ["a", "b", "c", *FILLER]

    listed: list[list[str]] = []
    assert reader.create(f"{directory}d", b"", ephemeral=True) is not None
    assert served_during(own_etcd, lambda: listed.append(reader.names(directory))) == {"Range": 1}
    b = reader.get(f"{directory}b")
    assert b is not None and b.owner is not None
    assert other.expire_session(b.owner) is True  # its lease revoked: its key goes with it
    # a key gone: the cheap read sees the count fall, and the range is read whole at once
    assert served_during(own_etcd, lambda: listed.append(reader.names(directory))) == {"Range": 2}
    assert listed == [["a", "b", "c", "d", *FILLER], ["a", "c", "d", *FILLER]]
    assert reader.names(directory) == ["a", "c", "d", *FILLER]  # a whole read again: it found none gone

    # deleted and created again between two reads (the count alone would not change)
    assert other.delete(f"{directory}c") is True
    assert other.create(f"{directory}c", b"") is not None
    assert reader.names(directory) == ["a", "c", "d", *FILLER]
    assert other.delete(f"{directory}c") is True
    assert other.create(f"{directory}e", b"") is not None  # one gone, one new: the same count
    assert reader.names(directory) == ["a", "d", "e", *FILLER]
    assert reader.names(directory) == ["a", "d", "e", *FILLER]

    dying = make()
    dying.open_session(1.0)  # never refreshed: etcd expires it
    assert dying.create(f"{directory}f", b"", ephemeral=True) is not None
    assert reader.names(directory) == ["a", "d", "e", "f", *FILLER]
    wait_until(lambda: other.get(f"{directory}f") is None, what="etcd to expire the unrefreshed lease")
    assert reader.names(directory) == ["a", "d", "e", *FILLER]
    assert reader.names(f"t-{uuid.uuid4().hex[:12]}/missing/") == []


def test_list_stays_exact_as_entries_change(make: Callable[[], EtcdBackend], own_etcd: str,
                                            directory: str) -> None:
    reader, other = make(), make()
    other.open_session(30)
    for name in FILLER:
        assert other.create(f"{directory}{name}", name.encode(), ephemeral=True) is not None
    assert reader.list(directory) == [other.get(f"{directory}{name}") for name in FILLER]
    seen = answers(reader)
    assert served_during(own_etcd, lambda: reader.list(directory)) == {"Range": 1}
    assert not seen[-1][2].get("kvs")  # nothing written since: no entry sent again
    first = other.get(f"{directory}{FILLER[0]}")
    assert first is not None and other.compare_and_set(first.key, b"new", first.version) is not None
    assert other.create(f"{directory}a", b"added") is not None
    current = [other.get(f"{directory}a"), *(other.get(f"{directory}{name}") for name in FILLER)]
    assert current[1] is not None and current[1].value == b"new"
    assert reader.list(directory) == current
    assert len(seen[-1][2]["kvs"]) == 2  # the two written since
    assert other.delete(f"{directory}{FILLER[1]}") is True
    del current[2]
    assert reader.list(directory) == current
    other.close_session()  # every ephemeral entry goes with the lease
    assert reader.list(directory) == current[:1]


def test_small_and_huge_ranges_are_not_kept(make: Callable[[], EtcdBackend], directory: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    reader = make()
    assert reader.create(f"{directory}k", b"") is not None
    assert reader.names(directory) == ["k"] and [e.key for e in reader.list(directory)] == [f"{directory}k"]
    assert not reader._listings
    monkeypatch.setattr(etcd_backend, "_KEEP_UPTO", len(FILLER))
    for name in FILLER:
        assert reader.create(f"{directory}{name}", b"") is not None
    assert reader.names(directory) == ["k", *FILLER]
    assert not reader._listings


def test_kept_listings_are_bounded(make: Callable[[], EtcdBackend], directory: str) -> None:
    reader = make()
    directories = [f"{directory}{i}/" for i in range(etcd_backend._KEPT_LISTINGS + 4)]
    for one in directories:
        for name in FILLER:
            assert reader.create(f"{one}{name}", b"") is not None
        assert reader.names(one) == FILLER
    assert len(reader._listings) == etcd_backend._KEPT_LISTINGS
    for one in directories:  # dropped or kept: the same answer
        assert reader.create(f"{one}n", b"") is not None
        assert reader.names(one) == ["n", *FILLER]
