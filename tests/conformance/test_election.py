"""Leader election: the same behaviour on every backend."""

from __future__ import annotations

import queue
import threading

from tests.conftest import Connect
from tests.waiting import wait_event, wait_until


def test_first_candidate_leads(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    election = a.election("scheduler")
    assert election.leader() is None
    assert election.campaign(timeout=10)
    assert election.is_leader and election.token
    assert b.election("scheduler").leader() == "a"
    assert b.election("scheduler").campaign(timeout=0.1) is False
    assert b.election("scheduler").candidates() == ["a"]


def test_next_candidate_takes_over_after_resign(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    first = a.election("e")
    assert first.campaign()
    second = b.election("e")
    elected = threading.Event()
    thread = threading.Thread(target=lambda: second.campaign(timeout=30) and elected.set())
    thread.start()
    wait_until(lambda: first.candidates() == ["a", "b"], what="b queued as candidate")
    first_token = first.token
    assert first.resign() is True
    wait_event(elected, what="b elected")
    thread.join(5)
    assert second.is_leader and not first.is_leader
    assert second.token is not None and first_token is not None and second.token > first_token
    assert a.election("e").leader() == "b"
    assert first.resign() is False


def test_candidates_are_served_in_arrival_order(connect: Connect) -> None:
    coords = [connect(f"c{i}") for i in range(4)]
    elections = [c.election("e") for c in coords]
    assert elections[0].campaign()
    order: queue.Queue[str] = queue.Queue()
    threads = []
    for i in range(1, 4):

        def run(i: int = i) -> None:
            assert elections[i].campaign(timeout=30)
            order.put(f"c{i}")
            elections[i].resign()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        wait_until(lambda n=i + 1: len(elections[0].candidates()) == n, what="candidate queued")
    elections[0].resign()
    assert [order.get(timeout=20) for _ in range(3)] == ["c1", "c2", "c3"]
    for thread in threads:
        thread.join(5)


def test_leadership_moves_when_the_leader_session_ends(connect: Connect) -> None:
    a, b, observer = connect("a"), connect("b"), connect("observer")
    assert a.election("e").campaign()
    changes: queue.Queue[str | None] = queue.Queue()
    observer.election("e").on_change(changes.put)
    follower = b.election("e")
    thread = threading.Thread(target=lambda: follower.campaign(timeout=30))
    thread.start()
    wait_until(lambda: observer.election("e").candidates() == ["a", "b"], what="b queued")
    assert observer.backend.expire_session(a.session_id)  # type: ignore[arg-type]
    assert changes.get(timeout=20) == "b"
    thread.join(20)
    assert follower.is_leader


def test_close_resigns(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    assert a.election("e").campaign()
    a.close()
    assert b.election("e").campaign(timeout=10)
