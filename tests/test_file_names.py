"""file:// ``names()`` (a group's ``member_ids()``): it tells an ephemeral
key's owner by the spare the key links instead of reading the key, and must
still give exactly what ``list()`` gives: no dead session's key, the full
segment of a hashed name, persistent keys, keys whose spare is gone. And the
shortcuts of the uncontended lock path keep checking what they skip."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from moot.backends.file import FileBackend
from moot.errors import InvalidArgument
from tests.conftest import MakeBackend
from tests.test_file_backend import _holder, _kill

Make = Callable[[], FileBackend]
MEMBERS = "ns/group/g/members/"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "coord"


@pytest.fixture
def make(root: Path, open_backend: MakeBackend) -> Make:
    return lambda: open_backend(f"file://{root}", ttl=2, timeout=5)


def _listed(backend: FileBackend) -> list[str]:
    return [e.key[len(MEMBERS):] for e in backend.list(MEMBERS) if "/" not in e.key[len(MEMBERS):]]


def test_names_agree_with_list_on_every_kind_of_key(make: Make, root: Path) -> None:
    a, b = make(), make()
    long = "L" * 250  # stored under a hashed name
    assert a.create(MEMBERS + "mine", b"{}", ephemeral=True)
    assert b.create(MEMBERS + "other", b"{}", ephemeral=True)
    assert b.create(MEMBERS + long, b"{}", ephemeral=True)
    assert a.create(MEMBERS + "kept", b"{}")  # persistent: no spare
    assert a.create(MEMBERS + "deeper/key", b"{}")  # a subdirectory: not a name
    expected = sorted(["mine", "other", long, "kept"])
    for reader in (a, b, make()):
        assert reader.names(MEMBERS) == _listed(reader) == expected
    # A key whose spare is gone (swept by mistake) is read instead: still live.
    members = root / "ns.d" / "group.d" / "g.d" / "members.d"
    spare = next(p for p in members.iterdir() if p.name.startswith(".f-") and p.stat().st_ino ==
                 (members / "other").stat().st_ino)
    spare.unlink()
    assert a.names(MEMBERS) == expected
    b.close_session()
    assert a.names(MEMBERS) == _listed(a) == sorted(["mine", "kept"])
    assert a.names("ns/group/g/mem") == []  # not a directory: the base's definition
    assert a.names("ns/missing/") == []


def test_names_drop_a_sigkilled_owners_member_at_once(make: Make, root: Path) -> None:
    observer = make()
    assert observer.create(MEMBERS + "observer", b"{}", ephemeral=True)
    proc, _ = _holder(root)  # its member is ns/group/g/members/m
    try:
        assert observer.names(MEMBERS) == ["m", "observer"]
    finally:
        _kill(proc)
    assert observer.names(MEMBERS) == ["observer"]
    members = root / "ns.d" / "group.d" / "g.d" / "members.d"
    assert not (members / "m").exists()  # reaped


def test_delete_checks_keys_it_did_not_make(make: Make) -> None:
    a, b = make(), make()
    mine, queue = a.enqueue("ns/lock/x/q/", b"a")
    assert queue == [mine]
    with pytest.raises(InvalidArgument):
        a.delete("ns/lock/x/q/../" + mine.key.rsplit("/", 1)[1])
    with pytest.raises(InvalidArgument):
        a.delete(b"ns/lock/x/q/" + mine.key.rsplit("/", 1)[1].encode())  # type: ignore[arg-type]
    assert b.delete(mine.key) is True  # anyone may delete it: the owner's bookkeeping follows
    assert a.delete(mine.key) is False
    again, queue = a.enqueue("ns/lock/x/q/", b"a")
    assert queue == [again] and again.seq is not None and mine.seq is not None and again.seq > mine.seq
    assert a.delete(again.key) is True and a.list("ns/lock/x/q/") == []


def test_uncontended_cycles_keep_tokens_growing_and_one_holder(make: Make, root: Path) -> None:
    a, b = make(), make()
    last = 0
    for _ in range(50):
        mine, queue = a.enqueue("ns/lock/x/q/", b"a")
        assert queue == [mine] and mine.seq is not None and mine.seq > last
        theirs, queue = b.enqueue("ns/lock/x/q/", b"b")
        assert [e.key for e in queue] == [mine.key, theirs.key]  # FIFO: b queues behind a
        assert a.delete(mine.key) and b.delete(theirs.key)
        assert theirs.seq is not None
        last = theirs.seq
    queue_dir = root / "ns.d" / "lock.d" / "x.d" / "q.d"
    assert [n for n in os.listdir(queue_dir) if not n.startswith(".")] == []
