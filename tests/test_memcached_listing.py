"""names() on memcached (a group's member_ids()) reads the directory item
and its owners' sessions and nothing else: no spilled value is loaded, and
a member whose session is gone is not listed. Counted by a memcached of the
test's own (its cmd_get counts only this test's reads)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from moot.backends.memcached import MemcachedBackend
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import BOUND


@pytest.fixture
def own() -> Iterator[servers.Cluster]:
    with servers.own_cluster("memcached") as cluster:
        yield cluster


def _gets(member: servers.Member) -> int:
    with socket.create_connection(("127.0.0.1", member.port), timeout=BOUND) as sock:
        sock.sendall(b"stats\r\n")
        raw = b""
        while not raw.endswith(b"END\r\n"):
            raw += sock.recv(65536)
    (line,) = [line for line in raw.split(b"\r\n") if line.startswith(b"STAT cmd_get ")]
    return int(line.split()[2])


def test_names_reads_no_value_and_lists_no_dead_member(own: servers.Cluster, open_backend: MakeBackend) -> None:
    members, owners = [], []
    for i in range(3):
        made = open_backend(own.url, ttl=30.0, timeout=BOUND)
        assert isinstance(made, MemcachedBackend)
        members.append(made)
        value = b"x" * (5000 if i == 0 else 10)  # the first one's value is spilled to an item of its own
        created = made.create(f"g/members/m{i}", value, ephemeral=True)
        assert created is not None and created.owner is not None
        owners.append(created.owner)
    reader = open_backend(own.url, ttl=None, timeout=BOUND)
    assert reader.names("g/members/") == ["m0", "m1", "m2"]  # the reader now expects these owners
    before = _gets(own.members[0])
    assert reader.names("g/members/") == ["m0", "m1", "m2"]
    assert _gets(own.members[0]) - before == 1 + 3  # the directory item and the 3 sessions: no value
    before = _gets(own.members[0])
    assert [e.key for e in reader.list("g/members/")] == ["g/members/m0", "g/members/m1", "g/members/m2"]
    # list() reads the names (their page, and the next to see there is none) and the spilled value too
    assert _gets(own.members[0]) - before == 1 + 2 + 3 + 1
    assert members[2].expire_session(owners[1])  # the reader is not told: it finds out from the server
    assert reader.names("g/members/") == ["m0", "m2"]
