"""Group membership: the same behaviour on every backend."""

from __future__ import annotations

import queue
import threading
import time

import pytest

import moot
from moot.backends.base import Entry
from tests.conftest import TEST_TTL, Connect
from tests.waiting import wait_event, wait_until


def test_join_lists_members_with_capabilities(connect: Connect) -> None:
    a, b = connect("conductor-1"), connect("conductor-2")
    a.group("conductors").join(capabilities={"drivers": ["ipmi"]})
    b.group("conductors").join(capabilities=b"\x00raw\xff")
    members = a.group("conductors").members()
    assert set(members) == {"conductor-1", "conductor-2"}
    assert members["conductor-1"].capabilities == {"drivers": ["ipmi"]}
    assert members["conductor-2"].capabilities == b"\x00raw\xff"
    assert members["conductor-1"].joined_at > 0
    assert members["conductor-1"].last_seen >= members["conductor-1"].joined_at
    assert b.group("conductors").member_ids() == {"conductor-1", "conductor-2"}
    assert b.groups() == ["conductors"]


def test_leave_removes_the_member_and_never_raises(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    group = a.group("g")
    group.join()
    b.group("g").join()
    assert group.leave() is True
    assert set(b.group("g").members()) == {"b"}
    assert group.leave() is False
    assert a.group("never-joined").leave() is False


def test_unknown_group_and_member(connect: Connect) -> None:
    coord = connect("a")
    with pytest.raises(moot.GroupNotFound):
        coord.group("missing").members()
    with pytest.raises(moot.GroupNotFound):
        coord.group("missing").member_ids()
    coord.group("g").join()
    with pytest.raises(moot.MemberNotFound):
        coord.group("g").member("nobody")
    assert coord.group("g").member("a").member_id == "a"
    assert isinstance(moot.GroupNotFound("x"), moot.MootError)


def test_delete_group(connect: Connect) -> None:
    a = connect("a")
    group = a.group("g")
    group.join()
    with pytest.raises(moot.GroupNotEmpty):
        group.delete()
    group.leave()
    group.delete()
    assert a.groups() == []
    with pytest.raises(moot.GroupNotFound):
        group.delete()
    with pytest.raises(moot.GroupNotFound):
        group.members()


def test_update_capabilities(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    group = a.group("g")
    with pytest.raises(moot.MemberNotFound):
        group.update_capabilities({"x": 1})
    group.join({"load": 1})
    joined_at = b.group("g").members()["a"].joined_at
    group.update_capabilities({"load": 2})
    member = b.group("g").members()["a"]
    assert member.capabilities == {"load": 2} and member.joined_at == joined_at
    with pytest.raises(moot.InvalidArgument):
        group.update_capabilities({"bad": object()})


def test_is_up(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    a.group("g").join()
    assert b.group("g").is_up("a")
    assert not b.group("g").is_up("b")
    a.group("g").leave()
    assert not b.group("g").is_up("a")


def test_same_member_id_from_two_live_sessions_is_refused(connect: Connect) -> None:
    first, second = connect("same"), connect("same")
    first.group("g").join()
    with pytest.raises(moot.MemberAlreadyJoined):
        second.group("g").join()
    first.group("g").join({"again": True})  # joining again from the same session updates
    assert second.group("g").members()["same"].capabilities == {"again": True}


def test_watch_reports_joins_and_leaves(connect: Connect) -> None:
    observer, a, b = connect("observer"), connect("a"), connect("b")
    observer.group("g").create()
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    watch = observer.group("g").watch(on_join=lambda m: events.put(("join", m.member_id)),
                                      on_leave=lambda m: events.put(("leave", m.member_id)))
    a.group("g").join()
    assert events.get(timeout=20) == ("join", "a")
    b.group("g").join()
    assert events.get(timeout=20) == ("join", "b")
    a.group("g").leave()
    assert events.get(timeout=20) == ("leave", "a")
    watch.cancel()
    b.group("g").leave()
    b.group("g").join()
    # Nothing more arrives once cancelled (checked on a later, known event).
    fresh: queue.Queue[str] = queue.Queue()
    observer.group("g").watch(on_leave=lambda m: fresh.put(m.member_id))
    b.group("g").leave()
    assert fresh.get(timeout=20) == "b"
    assert events.empty()


def test_cancel_does_not_wait_for_a_refresh_in_progress(url: str, namespace: str) -> None:
    """A watch's refresh reads the group on the callbacks' thread; cancel()
    returns at once even then. It used to wait for the refresh: under
    eventlet, where that thread is a green thread, the wait blocked the
    hub the refresh needed (a deadlock, seen in this suite's eventlet run).
    The blocking API's own watch, which moot.aio's is built on."""
    with moot.connect(url, member_id="observer", namespace=namespace, ttl=TEST_TTL) as observer, \
            moot.connect(url, member_id="m", namespace=namespace, ttl=TEST_TTL) as member:
        group = observer.group("g")
        group.create()
        watch = group.watch(on_join=lambda m: None)
        entered, release = threading.Event(), threading.Event()
        read = group._member_entries

        def slow_read() -> dict[str, Entry]:
            entered.set()
            release.wait(10)
            return read()

        group._member_entries = slow_read  # type: ignore[method-assign]
        unblock = threading.Timer(3.0, release.set)  # bounds the wait of a cancel() that waits
        unblock.start()
        try:
            member.group("g").join()
            wait_event(entered, what="a refresh reading the group")
            began = time.monotonic()
            watch.cancel()
            assert time.monotonic() - began < 1.0
        finally:
            release.set()
            unblock.cancel()


def test_watch_can_start_with_the_present_members_and_reports_members_both_ways(connect: Connect) -> None:
    observer, a, b = connect("observer"), connect("a"), connect("b")
    b.group("g").join({"n": 2})
    a.group("g").join({"n": 1})
    events: queue.Queue[tuple[str, str, object]] = queue.Queue()
    observer.group("g").watch(on_join=lambda m: events.put(("join", m.member_id, m.capabilities)),
                              on_leave=lambda m: events.put(("leave", m.member_id, m.capabilities)),
                              existing=True)
    assert events.get(timeout=20) == ("join", "a", {"n": 1})  # present ones first, by member id
    assert events.get(timeout=20) == ("join", "b", {"n": 2})
    a.group("g").leave()
    assert events.get(timeout=20) == ("leave", "a", {"n": 1})  # a Member, as last seen
    assert events.empty()


def test_member_of_a_lost_session_leaves_then_rejoins(connect: Connect) -> None:
    a, observer = connect("a"), connect("observer")
    a.group("g").join({"role": "worker"})
    left, back = threading.Event(), threading.Event()
    observer.group("g").watch(on_leave=lambda m: left.set(), on_join=lambda m: back.set())
    assert observer.backend.expire_session(a.session_id)  # type: ignore[arg-type]
    wait_event(left, what="member left with its session")
    wait_event(back, what="member rejoined on its new session")
    assert observer.group("g").members()["a"].capabilities == {"role": "worker"}


def test_close_leaves_groups(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    a.group("g").join()
    a.close()
    wait_until(lambda: not b.group("g").is_up("a"), what="a gone after close")
    assert b.group("g").members() == {}
    assert b.group("g").member_ids() == set()


@pytest.mark.parametrize("name", ["", "x" * 257])
def test_bad_group_and_member_names(connect: Connect, name: str) -> None:
    coord = connect()
    with pytest.raises(moot.InvalidName):
        coord.group(name)
    with pytest.raises(moot.InvalidName):
        coord.group("g").is_up(name)


def test_odd_names_round_trip(connect: Connect) -> None:
    coord = connect("../member/ü")
    coord.group("../grüp/x").join()
    assert coord.groups() == ["../grüp/x"]
    assert list(coord.group("../grüp/x").members()) == ["../member/ü"]
    assert coord.group("../grüp/x").member_ids() == {"../member/ü"}
