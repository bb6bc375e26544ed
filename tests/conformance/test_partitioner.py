"""Partitioner: a consistent hash ring over a group's live members, the same
on every backend."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections import Counter

import pytest

import moot
from tests.conftest import Connect
from tests.waiting import wait_until

KEYS = [f"node-{i}" for i in range(10_000)]


def _ring_of(partitioner: moot.Partitioner, expected: set[str]) -> None:
    wait_until(lambda: partitioner.members() == expected, what=f"ring members {sorted(expected)}")


def _primaries(partitioner: moot.Partitioner) -> dict[str, str]:
    return {key: partitioner.owners(key)[0] for key in KEYS}


def test_every_key_has_one_owner_and_every_member_agrees(connect: Connect) -> None:
    coords = [connect(f"conductor-{i}") for i in range(3)]
    partitioners = [coord.partitioner("conductors") for coord in coords]
    for coord in coords:
        coord.group("conductors").join()
    for partitioner in partitioners:
        _ring_of(partitioner, {"conductor-0", "conductor-1", "conductor-2"})
    for key in KEYS[:500]:
        owners = {tuple(p.owners(key)) for p in partitioners}
        assert len(owners) == 1 and len(next(iter(owners))) == 1
        assert sum(p.owns(key) for p in partitioners) == 1
    shares = Counter(_primaries(partitioners[0]).values())
    assert all(share > len(KEYS) / 3 / 2 for share in shares.values()), shares


def test_an_observer_that_is_not_a_member_sees_the_ring(connect: Connect) -> None:
    worker, observer = connect("worker"), connect("observer")
    partitioner = observer.partitioner("workers")
    assert partitioner.members() == frozenset()
    assert partitioner.owners("x") == [] and not partitioner.owns("x")
    worker.group("workers").join()
    _ring_of(partitioner, {"worker"})
    assert partitioner.owners("x") == ["worker"] and not partitioner.owns("x")


@pytest.mark.parametrize("change", ["leave", "join"])
def test_only_the_keys_of_the_changed_member_move(connect: Connect, change: str) -> None:
    n = 5
    names = [f"m{i}" for i in range(n)]
    coords = {name: connect(name) for name in [*names, "newcomer"]}
    partitioner = coords["m0"].partitioner("ring")
    for name in names:
        coords[name].group("ring").join()
    _ring_of(partitioner, set(names))
    before = _primaries(partitioner)
    if change == "leave":
        changed, members = "m3", set(names) - {"m3"}
        coords["m3"].group("ring").leave()
    else:
        changed, members = "newcomer", {*names, "newcomer"}
        coords["newcomer"].group("ring").join()
    _ring_of(partitioner, members)
    after = _primaries(partitioner)
    moved = [key for key in KEYS if before[key] != after[key]]
    # Only keys the changed member loses (leave) or gains (join) move ...
    if change == "leave":
        assert all(before[key] == changed for key in moved)
    else:
        assert all(after[key] == changed for key in moved)
    # ... and they are about its fair share of the keys.
    fair = 1 / (n if change == "leave" else n + 1)
    assert 0.5 * fair < len(moved) / len(KEYS) < 1.5 * fair, len(moved)


def test_replicas_are_distinct_and_change_by_one_member(connect: Connect) -> None:
    names = ["a", "b", "c", "d"]
    coords = {name: connect(name) for name in names}
    partitioner = coords["a"].partitioner("replicated", replicas=3)
    for coord in coords.values():
        coord.group("replicated").join()
    _ring_of(partitioner, set(names))
    before = {key: partitioner.owners(key) for key in KEYS[:2000]}
    assert all(len(set(owners)) == 3 for owners in before.values())
    coords["d"].group("replicated").leave()
    _ring_of(partitioner, {"a", "b", "c"})
    for key, owners in before.items():
        now = partitioner.owners(key)
        if "d" in owners:
            assert now[:2] == [m for m in owners if m != "d"] and len(set(now)) == 3
        else:
            assert now == owners
    coords["c"].group("replicated").leave()
    _ring_of(partitioner, {"a", "b"})
    assert sorted(partitioner.owners("x")) == ["a", "b"]  # fewer members than replicas


def test_weights_from_capabilities(connect: Connect) -> None:
    heavy, light, drained = connect("heavy"), connect("light"), connect("drained")
    partitioner = light.partitioner("weighted")
    heavy.group("weighted").join({"weight": 2})
    light.group("weighted").join()
    drained.group("weighted").join({"weight": 0})
    _ring_of(partitioner, {"heavy", "light", "drained"})
    shares = Counter(_primaries(partitioner).values())
    assert "drained" not in shares
    assert 1.5 < shares["heavy"] / shares["light"] < 2.5, shares


def test_on_rebalance_reports_the_new_member_set(connect: Connect) -> None:
    a, b, c = connect("a"), connect("b"), connect("c")
    a.group("g").join()
    partitioner = a.partitioner("g")
    changes: queue.Queue[tuple[frozenset[str], str]] = queue.Queue()
    partitioner.on_rebalance(lambda members: changes.put((members, threading.current_thread().name)))
    b.group("g").join()
    assert changes.get(timeout=20) == (frozenset({"a", "b"}), "moot-callbacks")
    c.group("g").join()
    assert changes.get(timeout=20)[0] == frozenset({"a", "b", "c"})
    # A crashed member (its session evicted) leaves the ring, then rejoins on its new session.
    assert a.backend.expire_session(b.session_id)  # type: ignore[arg-type]
    assert changes.get(timeout=20)[0] == frozenset({"a", "c"})
    assert changes.get(timeout=20)[0] == frozenset({"a", "b", "c"})
    partitioner.close()
    c.group("g").leave()
    assert partitioner.refresh() == frozenset({"a", "b"})  # refresh() still reads on demand


def test_keys_str_and_bytes(connect: Connect) -> None:
    coord = connect("only")
    coord.group("g").join()
    partitioner = coord.partitioner("g")
    assert partitioner.owns("volume-1") and partitioner.owns(b"\xff\x00")
    assert partitioner.owners("é") == partitioner.owners("é".encode())
    with pytest.raises(moot.InvalidArgument):
        partitioner.owners(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("replicas", [0, -1, 1.5, True])
def test_bad_replicas(connect: Connect, replicas: object) -> None:
    with pytest.raises(moot.InvalidArgument):
        connect().partitioner("g", replicas=replicas)  # type: ignore[arg-type]


def test_ring_is_the_same_in_every_process() -> None:
    """The ring depends on member ids and weights only (no salted hash())."""
    code = ("from moot.recipes.partitioner import HashRing\n"
            "ring = HashRing({'a': 1, 'b': 1, 'c': 2})\n"
            "print([ring.owners(f'k{i}', 2) for i in range(200)])")
    outputs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                              check=True, capture_output=True, text=True).stdout for seed in ("1", "2")}
    assert len(outputs) == 1
