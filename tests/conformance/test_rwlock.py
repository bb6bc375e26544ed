"""Shared/exclusive locks: the same behaviour on every backend."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import moot
from moot.recipes.rwlock import RWLock, UpgradeConflict
from tests.conftest import Connect
from tests.waiting import BOUND, wait_event, wait_until


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, threading.Event, list[object]]:
    """Run ``fn`` in a thread; the event is set when it returned (result in the list)."""
    done = threading.Event()
    result: list[object] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            result.append(exc)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done, result


def info(coord: moot.Coordinator, name: str) -> moot.LockInfo:
    found = coord.lock_info(name)
    assert found is not None
    return found


def modes(coord: moot.Coordinator, name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(holders, waiters) of ``name`` as (member, mode) pairs."""
    found = coord.lock_info(name)
    if found is None:
        return [], []
    return [(h.member, h.mode) for h in found.holders], [(w.member, w.mode) for w in found.waiters]


def test_readers_share_and_writers_exclude(connect: Connect) -> None:
    a, b, c = connect("a"), connect("b"), connect("c")
    ra, rb, wc = a.rwlock("doc"), b.rwlock("doc"), c.rwlock("doc")
    assert ra.acquire_read() and rb.acquire_read(blocking=False)
    assert ra.mode == rb.mode == "shared" and ra.is_held and rb.is_held
    assert wc.acquire_write(blocking=False) is False
    assert wc.acquire_write(timeout=0.1) is False
    assert modes(c, "doc") == ([("a", "shared"), ("b", "shared")], [])
    ra.release()
    rb.release()
    assert wc.acquire_write(blocking=False) and wc.mode == "exclusive"
    assert ra.acquire_read(blocking=False) is False
    assert modes(a, "doc") == ([("c", "exclusive")], [])
    assert wc.release() is True
    assert ra.acquire_read(blocking=False)


def test_context_managers_and_lock_timeout(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    rw = a.rwlock("doc", timeout=5)
    with rw.write() as held:
        assert held is rw and rw.mode == "exclusive" and rw.token is not None
        with pytest.raises(moot.LockTimeout), b.rwlock("doc").read(timeout=0.1):
            pass
        with pytest.raises(moot.LockTimeout), b.rwlock("doc", timeout=0.1).write():
            pass
    assert not rw.is_held and rw.mode is None and rw.token is None
    with rw.read(), b.rwlock("doc").read(timeout=5) as other:
        assert other.mode == "shared"
    assert a.lock_info("doc") is None


def test_plain_locks_and_rwlocks_share_one_queue(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    plain = a.lock("volume")
    assert plain.acquire()
    assert b.rwlock("volume").acquire_read(blocking=False) is False
    plain.release()
    reader = b.rwlock("volume")
    assert reader.acquire_read()
    assert a.lock("volume").acquire(blocking=False) is False
    assert a.rwlock("volume").acquire_read(blocking=False)


def test_readers_arriving_after_a_writer_wait_behind_it(connect: Connect) -> None:
    r1c, wc, r2c = connect("r1"), connect("w"), connect("r2")
    r1 = r1c.rwlock("doc")
    assert r1.acquire_read()
    writer, late_reader = wc.rwlock("doc"), r2c.rwlock("doc")
    _, wrote, _ = in_thread(lambda: writer.acquire_write(timeout=BOUND))
    wait_until(lambda: modes(r1c, "doc")[1] == [("w", "exclusive")], what="writer queued")
    # The lock is only read-held, yet a new reader may not pass the queued writer.
    assert late_reader.acquire_read(blocking=False) is False
    released = threading.Event()
    seen: list[bool] = []
    t, read, _ = in_thread(lambda: late_reader.acquire_read(timeout=BOUND) and seen.append(released.is_set()))
    wait_until(lambda: modes(r1c, "doc")[1] == [("w", "exclusive"), ("r2", "shared")], what="r2 queued")
    r1.release()
    wait_event(wrote, what="writer served after the reader ahead of it left")
    assert modes(r1c, "doc") == ([("w", "exclusive")], [("r2", "shared")])
    released.set()
    writer.release()
    wait_event(read, what="late reader served after the writer")
    t.join(BOUND)
    assert seen == [True]


def test_mixed_queue_is_served_in_arrival_order(connect: Connect) -> None:
    head = connect("head")
    first = head.rwlock("fifo")
    assert first.acquire_write()
    plan = [("r1", "read"), ("w1", "write"), ("r2", "read"), ("r3", "read"), ("w2", "write"), ("r4", "read")]
    served: list[str] = []
    served_lock = threading.Lock()
    releases = {who: threading.Event() for who, _ in plan}
    threads = []
    for place, (who, kind) in enumerate(plan, 1):
        rw = connect(who).rwlock("fifo")

        def run(rw: RWLock = rw, who: str = who, kind: str = kind) -> None:
            got = rw.acquire_read(timeout=BOUND) if kind == "read" else rw.acquire_write(timeout=BOUND)
            assert got
            with served_lock:
                served.append(who)
            releases[who].wait(BOUND)
            rw.release()

        threads.append(threading.Thread(target=run))
        threads[-1].start()
        wait_until(lambda n=place: len(info(head, "fifo").waiters) == n, what=f"{who} queued")
    assert [(w.member, w.mode) for w in info(head, "fifo").waiters] == [
        ("r1", "shared"), ("w1", "exclusive"), ("r2", "shared"), ("r3", "shared"), ("w2", "exclusive"),
        ("r4", "shared")]

    def holders() -> list[str]:
        return sorted(h.member for h in info(head, "fifo").holders)

    first.release()
    wait_until(lambda: holders() == ["r1"], what="r1 alone")
    releases["r1"].set()
    wait_until(lambda: holders() == ["w1"], what="w1 alone")
    releases["w1"].set()
    wait_until(lambda: holders() == ["r2", "r3"], what="r2 and r3 together")
    releases["r2"].set()
    releases["r3"].set()
    wait_until(lambda: holders() == ["w2"], what="w2 alone")
    releases["w2"].set()
    wait_until(lambda: holders() == ["r4"], what="r4 last")
    releases["r4"].set()
    for thread in threads:
        thread.join(BOUND)
    assert served.index("r1") < served.index("w1") < min(served.index("r2"), served.index("r3"))
    assert max(served.index("r2"), served.index("r3")) < served.index("w2") < served.index("r4")


def test_upgrade_alone_is_immediate_and_excludes_readers(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    rw = a.rwlock("doc")
    assert rw.acquire_read()
    token = rw.token
    assert rw.upgrade() is True
    assert rw.mode == "exclusive" and rw.token == token
    assert rw.upgrade() is True  # already exclusive
    assert b.rwlock("doc").acquire_read(blocking=False) is False
    assert b.lock("doc").acquire(blocking=False) is False
    assert modes(b, "doc") == ([("a", "exclusive")], [])
    assert rw.release() is True and not rw.is_held
    assert b.lock_info("doc") is None
    assert b.rwlock("doc").acquire_read(blocking=False)


def test_upgrade_waits_for_other_readers_and_shuts_the_door(connect: Connect) -> None:
    a, b, c = connect("a"), connect("b"), connect("c")
    up, other = a.rwlock("doc"), b.rwlock("doc")
    assert up.acquire_read() and other.acquire_read()
    _, upgraded, result = in_thread(lambda: up.upgrade(timeout=BOUND))
    wait_until(lambda: modes(c, "doc")[0] == [("a", "upgrading"), ("b", "shared")], what="upgrade pending")
    late = c.rwlock("doc")
    assert late.acquire_read(blocking=False) is False  # no new reader once an upgrade waits
    assert not upgraded.is_set()
    other.release()
    wait_event(upgraded, what="upgrade granted once the other reader left")
    assert result == [True] and up.mode == "exclusive"
    assert modes(c, "doc") == ([("a", "exclusive")], [])
    assert late.acquire_read(blocking=False) is False
    up.release()
    assert late.acquire_read(blocking=False)


def race_upgrades(ra: RWLock, rb: RWLock) -> dict[str, object]:
    """Both (shared holders) upgrade at the same instant; the one that gets
    UpgradeConflict releases, as leaving ``with rw.read():`` would."""
    start = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def attempt(rw: RWLock, who: str) -> None:
        start.wait(BOUND)
        try:
            outcomes[who] = rw.upgrade(timeout=BOUND)
        except UpgradeConflict as exc:
            outcomes[who] = exc
            rw.release()

    threads = [threading.Thread(target=attempt, args=(ra, "a")), threading.Thread(target=attempt, args=(rb, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    return outcomes


def test_concurrent_upgrades_one_wins_the_other_fails_at_once(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    for _ in range(3):
        ra, rb = a.rwlock("doc"), b.rwlock("doc")
        assert ra.acquire_read() and rb.acquire_read()
        outcomes = race_upgrades(ra, rb)
        assert sorted(type(v).__name__ for v in outcomes.values()) == ["UpgradeConflict", "bool"]
        winner, loser = (ra, rb) if outcomes["a"] is True else (rb, ra)
        assert winner.mode == "exclusive" and not loser.is_held
        winner.release()
        assert a.lock_info("doc") is None


def test_second_upgrader_gets_the_conflict_without_waiting(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    first, second = a.rwlock("doc"), b.rwlock("doc")
    assert first.acquire_read() and second.acquire_read()
    _, upgraded, result = in_thread(lambda: first.upgrade(timeout=BOUND))
    wait_until(lambda: modes(b, "doc")[0][0] == ("a", "upgrading"), what="first upgrade pending")
    with pytest.raises(UpgradeConflict):
        second.upgrade(timeout=BOUND)  # would block for BOUND if it waited: it must not
    assert second.mode == "shared" and second.is_held  # the shared hold is kept
    assert not upgraded.is_set()
    second.release()
    wait_event(upgraded, what="first upgrade granted")
    assert result == [True]


def test_upgrade_timeout_keeps_the_shared_hold(connect: Connect) -> None:
    a, b, c = connect("a"), connect("b"), connect("c")
    up, other = a.rwlock("doc"), b.rwlock("doc")
    assert up.acquire_read() and other.acquire_read()
    assert up.upgrade(timeout=0.2) is False
    assert up.mode == "shared" and up.is_held
    assert modes(c, "doc") == ([("a", "shared"), ("b", "shared")], [])
    assert c.rwlock("doc").acquire_read(blocking=False)  # the door is open again


def test_upgrade_jumps_queued_writers_and_keeps_late_readers_out(connect: Connect) -> None:
    a, w, r = connect("a"), connect("w"), connect("r")
    up = a.rwlock("doc")
    assert up.acquire_read()
    writer, reader = w.rwlock("doc"), r.rwlock("doc")
    _, writer_done, writer_result = in_thread(lambda: writer.acquire_write(timeout=60))
    wait_until(lambda: modes(a, "doc")[1] == [("w", "exclusive")], what="writer queued")
    reader_view: list[bool] = []
    _, reader_done, _ = in_thread(lambda: reader.acquire_read(timeout=BOUND) and reader_view.append(up.is_held))
    wait_until(lambda: len(modes(a, "doc")[1]) == 2, what="reader queued behind the writer")
    # The writer and the reader are between my entry and my upgrade marker:
    # neither holds, so the upgrade is granted at once.
    assert up.upgrade(timeout=BOUND) is True
    assert modes(a, "doc") == ([("a", "exclusive")], [("w", "exclusive"), ("r", "shared")])
    # The writer gives up; the reader behind it must still not get in.
    w.close()
    wait_event(writer_done, what="writer thread ended with its coordinator")
    wait_until(lambda: modes(a, "doc")[1] == [("r", "shared")], what="writer gone")
    assert modes(a, "doc")[0] == [("a", "exclusive")]
    assert not reader_done.is_set()
    up.release()
    wait_event(reader_done, what="reader served after the upgraded holder left")
    assert reader_view == [False]
    assert writer_result and writer_result[0] is not True


def test_tokens_fence_writers_and_readers(connect: Connect) -> None:
    coord = connect()
    tokens = []
    for kind in ["write", "read", "write", "upgrade", "write", "read"]:
        rw = coord.rwlock("fenced")
        assert rw.acquire_write() if kind == "write" else rw.acquire_read()
        if kind == "upgrade":
            assert rw.upgrade()
        tokens.append(rw.token)
        rw.release()
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_introspection_lists_every_reader_and_waiter_modes(connect: Connect) -> None:
    r1, r2, w, observer = connect("r1"), connect("r2"), connect("w"), connect("observer")
    first, second = r1.rwlock("shared doc"), r2.rwlock("shared doc")
    assert first.acquire_read() and second.acquire_read()
    writer = w.rwlock("shared doc")
    thread, _, _ = in_thread(lambda: writer.acquire_write(timeout=BOUND))
    wait_until(lambda: len(info(observer, "shared doc").waiters) == 1, what="writer queued")
    found = info(observer, "shared doc")
    assert (found.holder, found.token, found.mode) == ("r1", first.token, "shared")
    assert found.since is not None and found.since > 0
    assert [(h.member, h.token, h.mode) for h in found.holders] == [
        ("r1", first.token, "shared"), ("r2", second.token, "shared")]
    assert [(x.member, x.mode) for x in found.waiters] == [("w", "exclusive")]
    listed = {i.name: i for i in observer.locks()}
    assert [h.member for h in listed["shared doc"].holders] == ["r1", "r2"]
    first.release()
    second.release()
    thread.join(BOUND)
    found = info(observer, "shared doc")
    assert [(h.member, h.mode) for h in found.holders] == [("w", "exclusive")] and found.waiters == ()
    writer.release()
    assert observer.lock_info("shared doc") is None and observer.locks() == []


def test_plain_lock_info_keeps_its_shape(connect: Connect) -> None:
    coord = connect("solo")
    lock = coord.lock("plain")
    assert lock.acquire()
    found = info(coord, "plain")
    assert (found.holder, found.token, found.mode, found.waiters) == ("solo", lock.token, "exclusive", ())
    assert [(h.member, h.token, h.mode) for h in found.holders] == [("solo", lock.token, "exclusive")]


def test_release_never_raises_when_not_held(connect: Connect) -> None:
    rw = connect().rwlock("doc")
    assert rw.release() is False
    assert rw.acquire_read()
    assert rw.release() is True
    assert rw.release() is False
    assert rw.acquire_write() and rw.upgrade()
    assert rw.release() is True and rw.release() is False


def test_misuse_is_an_error_not_a_deadlock(connect: Connect) -> None:
    rw = connect().rwlock("doc")
    with pytest.raises(moot.LockError):
        rw.upgrade()
    assert rw.acquire_read()
    with pytest.raises(moot.LockError):
        rw.acquire_write(timeout=0.1)
    with pytest.raises(moot.LockError):
        rw.acquire_read(timeout=0.1)
    assert rw.mode == "shared"
    with pytest.raises(moot.InvalidArgument):
        rw.upgrade(timeout=-1)
    with pytest.raises(moot.InvalidName):
        connect().rwlock("")


def test_lost_session_drops_shared_and_upgraded_holds(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    lost: list[RWLock] = []
    reader = RWLock(a.session, "doc", on_lost=lost.append)
    upgraded = a.rwlock("other")
    assert reader.acquire_read() and upgraded.acquire_read() and upgraded.upgrade()
    old_session = a.session_id
    assert b.backend.expire_session(old_session)  # type: ignore[arg-type]
    wait_until(lambda: lost == [reader], what="on_lost callback")
    assert not reader.is_held and reader.mode is None and not upgraded.is_held
    assert b.rwlock("doc").acquire_write(timeout=10)
    assert b.rwlock("other").acquire_write(timeout=10)
    assert reader.release() is False and upgraded.release() is False


def test_close_releases_rwlocks(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    rw = a.rwlock("doc")
    assert rw.acquire_read() and rw.upgrade()
    a.close()
    assert b.rwlock("doc").acquire_write(blocking=False)
