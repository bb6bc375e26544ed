"""Service groups (nova, ironic-inspector): the same behaviour on every backend."""

from __future__ import annotations

import threading
import time

import pytest

import moot
from tests.conftest import Connect
from tests.waiting import wait_event, wait_until


def test_hosts_join_under_their_own_names(connect: Connect) -> None:
    service, api = connect("compute-process-1"), connect("api")
    moot.ServiceGroup(service, "compute").join("host-1", data={"version": 3})
    view = moot.ServiceGroup(api, "compute")
    assert view.get_all() == ["host-1"]
    assert view.is_up("host-1") and not view.is_up("host-2")
    assert not view.is_up("compute-process-1")  # the coordinator's own id is not registered
    assert view.group.member("host-1").capabilities == {"version": 3}
    seen = view.last_seen("host-1")
    assert seen is not None and seen <= time.time() + 1
    assert view.last_seen("host-2") is None
    assert api.group("compute").is_up("host-1")  # it is an ordinary group underneath


def test_join_defaults_to_the_member_id_and_one_coordinator_may_join_several_hosts(connect: Connect) -> None:
    coord = connect("conductor-1")
    group = moot.ServiceGroup(coord, "conductors")
    group.join()
    group.join("conductor-extra")
    assert group.get_all() == ["conductor-1", "conductor-extra"]
    assert group.leave() is True  # leaves every host this object joined
    assert group.get_all() == []


def test_one_record_per_host(connect: Connect) -> None:
    first, second = connect("p1"), connect("p2")
    moot.ServiceGroup(first, "compute").join("host-1")
    with pytest.raises(moot.MemberAlreadyJoined, match="host-1"):
        moot.ServiceGroup(second, "compute").join("host-1")
    moot.ServiceGroup(first, "compute").join("host-1", data={"again": True})  # same session: updates
    assert moot.ServiceGroup(second, "compute").group.member("host-1").capabilities == {"again": True}


def test_leave_myself_and_leave_never_raises(connect: Connect) -> None:
    coord = connect("c")
    group = moot.ServiceGroup(coord, "scheduler")
    group.join("host-1")
    assert group.leave("host-1") is True
    assert not group.is_up("host-1")
    assert group.leave("host-1") is False
    assert group.leave() is False
    assert moot.ServiceGroup(coord, "never-joined").leave("ghost") is False


def test_leave_removes_the_record_of_another_session(connect: Connect) -> None:
    """nova deleting a service: its record goes, and nothing else of its session."""
    service, admin = connect("compute-1"), connect("admin")
    moot.ServiceGroup(service, "compute").join("host-1")
    lock = service.lock("held-by-the-service")
    assert lock.acquire(timeout=5)
    assert moot.ServiceGroup(admin, "compute").leave("host-1") is True
    assert moot.ServiceGroup(admin, "compute").get_all() == []
    assert lock.is_held and admin.lock_info("held-by-the-service").holder == "compute-1"  # type: ignore[union-attr]
    # The service may register again (e.g. when it restarts).
    moot.ServiceGroup(service, "compute").join("host-1")
    assert moot.ServiceGroup(admin, "compute").is_up("host-1")


def test_extra_checks_combine_with_the_backend(connect: Connect) -> None:
    """nova: a service is up only if the backend lists it and its DB record is fresh."""
    a, b, api = connect("a"), connect("b"), connect("api")
    moot.ServiceGroup(a, "compute").join("host-a")
    moot.ServiceGroup(b, "compute").join("host-b")
    stale = {"host-b"}
    asked: list[str] = []

    def db_record_fresh(host: str) -> bool:
        asked.append(host)
        return host not in stale

    view = moot.ServiceGroup(api, "compute", extra_checks=[db_record_fresh])
    assert view.is_up("host-a") and not view.is_up("host-b")
    assert view.get_all() == ["host-a"]
    assert [view.pick() for _ in range(10)] == ["host-a"] * 10
    asked.clear()
    assert not view.is_up("host-missing") and asked == []  # the backend is asked first
    assert not view.is_up("host-a", check=lambda host: False)
    stale.clear()
    assert view.get_all() == ["host-a", "host-b"]


def test_pick_is_random_among_live_members(connect: Connect) -> None:
    """ironic-inspector: the API picks a live conductor at random."""
    conductors = [connect(f"conductor-{i}") for i in range(3)]
    api = connect("api")
    view = moot.ServiceGroup(api, "ironic_inspector.service_group")
    with pytest.raises(moot.NoLiveMember):
        view.pick()
    for coord in conductors:
        moot.ServiceGroup(coord, "ironic_inspector.service_group").join()
    picked = {view.pick() for _ in range(200)}
    assert picked == {"conductor-0", "conductor-1", "conductor-2"}
    assert isinstance(moot.NoLiveMember("x"), moot.MemberNotFound)


def test_a_crashed_service_goes_down_and_a_renewed_session_registers_again(connect: Connect) -> None:
    service, api = connect("compute-1"), connect("api")
    moot.ServiceGroup(service, "compute").join("host-1")
    view = moot.ServiceGroup(api, "compute")
    went_down, came_back = threading.Event(), threading.Event()
    view.group.watch(on_leave=lambda host: went_down.set(), on_join=lambda member: came_back.set())
    assert api.backend.expire_session(service.session_id)  # type: ignore[arg-type]
    wait_event(went_down, what="host-1 down with its session")
    wait_event(came_back, what="host-1 registered again on the new session")
    assert view.is_up("host-1")


def test_close_leaves(connect: Connect) -> None:
    service, api = connect("s"), connect("api")
    moot.ServiceGroup(service, "compute").join("host-1")
    service.close()
    wait_until(lambda: moot.ServiceGroup(api, "compute").get_all() == [], what="host-1 gone after close")


def test_a_partitioner_spreads_keys_over_the_hosts(connect: Connect) -> None:
    coord = connect("process-1")
    services = moot.ServiceGroup(coord, "compute")
    services.join("host-1")
    services.join("host-2", data={"weight": 0})  # draining: owns nothing
    ring = coord.partitioner("compute")
    assert ring.members() == {"host-1", "host-2"}
    assert {ring.owners(f"instance-{i}")[0] for i in range(100)} == {"host-1"}


@pytest.mark.parametrize("name", ["", "x" * 257])
def test_bad_names(connect: Connect, name: str) -> None:
    coord = connect()
    with pytest.raises(moot.InvalidName):
        moot.ServiceGroup(coord, name)
    group = moot.ServiceGroup(coord, "compute")
    for call in (group.join, group.leave, group.is_up, group.last_seen):
        with pytest.raises(moot.InvalidName):
            call(name)
