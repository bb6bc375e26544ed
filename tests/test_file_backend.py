"""The file:// backend's own guarantees, on a real directory: crashes free
keys at once and wake watchers, long segments, persistence of seq, eviction.
(The behaviour shared with every backend is in tests/conformance.)"""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import moot
from moot.backends.file import FileBackend, slot
from moot.backends.file.inotify import Inotify
from moot.url import parse_url
from tests.conftest import MakeBackend
from tests.waiting import BOUND, wait_event, wait_until

#: "At once": the kernel drops a dead process's flocks; a regression to polling or
#: to a TTL would take seconds.
AT_ONCE = 2.0

REPO = Path(__file__).resolve().parents[1]

Make = Callable[[], FileBackend]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "coord"


@pytest.fixture
def make(root: Path, open_backend: MakeBackend) -> Make:
    """``make()``: a connected backend with an open session on ``root``."""
    return lambda: open_backend(f"file://{root}", ttl=2, timeout=5)


def _event_watch(backend: FileBackend, key: str) -> threading.Event:
    fired = threading.Event()
    backend.watch(key, fired.set)
    return fired


_HOLDER = """
import os, sys, time
from moot.backends.file import FileBackend
from moot.url import parse_url
backend = FileBackend(parse_url(sys.argv[1]), {})
backend.connect(5)
backend.open_session(2)
assert backend.create("ns/group/g/members/m", b"member", ephemeral=True)
if sys.argv[2] == "slot":  # alone in its queue: kept in the directory's slot (see slot.py)
    entry, queue = backend.enqueue("ns/lock/x/q/", b"holder")
    assert queue == [entry]
else:
    entry = backend.create_sequential("ns/lock/x/q/", b"holder")
if sys.argv[2] == "fork" and os.fork() == 0:
    time.sleep(60)  # a child that outlives its parent must not keep the keys alive
    os._exit(0)
print(entry.key, flush=True)
time.sleep(60)
"""


def _holder(root: Path, mode: str = "plain") -> tuple[subprocess.Popen[str], str]:
    """A process holding ephemeral keys; returns it and its lock queue key."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, f"file://{root}", mode], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    key = proc.stdout.readline().strip()
    assert key.startswith("ns/lock/x/q/"), key
    return proc, key


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(BOUND)


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_sigkilled_owner_frees_its_keys_at_once_and_wakes_watchers(make: Make, root: Path) -> None:
    observer = make()
    proc, key = _holder(root)
    try:
        assert observer.get(key) is not None
        assert [e.key for e in observer.list("ns/group/g/members/")] == ["ns/group/g/members/m"]
        exact = _event_watch(observer, key)  # how a lock waiter watches its predecessor
        prefix = _event_watch(observer, "ns/group/g/members/")
        member = _event_watch(observer, "ns/group/g/members/m")
    finally:
        _kill(proc)
    for fired, what in ((exact, "exact watch"), (prefix, "prefix watch"), (member, "member watch")):
        wait_event(fired, timeout=AT_ONCE, what=f"{what} woken by the owner's death")
    assert observer.get(key) is None
    assert observer.list("ns/") == []
    # A newcomer queues behind nobody (in the directory's slot), and the dead entries were reaped from disk.
    mine, queue = observer.enqueue("ns/lock/x/q/", b"next")
    assert queue == [mine] and mine.seq is not None and mine.seq > int(key.rsplit("/", 1)[1])
    assert observer.get(mine.key) == mine
    queue_dir = root / "ns.d" / "lock.d" / "x.d" / "q.d"
    assert [n for n in _names(queue_dir) if not n.startswith(".")] == []
    assert [n for n in _names(queue_dir) if n.startswith(".f-")] == []  # the dead owner's spare was swept


def test_forked_child_does_not_keep_its_parents_keys_alive(make: Make, root: Path) -> None:
    observer = make()
    proc, key = _holder(root, "fork")
    gone = _event_watch(observer, key)
    _kill(proc)
    try:
        wait_event(gone, what="key freed while the forked child lives")
        assert observer.get(key) is None
    finally:  # the child was re-parented when its parent died: find it by its command line
        found = subprocess.run(["pgrep", "-f", f"file://{root}"], capture_output=True, text=True).stdout
        for pid in found.split():
            os.kill(int(pid), signal.SIGKILL)


def test_long_segments_are_hashed_on_disk_and_round_trip(make: Make, root: Path) -> None:
    backend, other = make(), make()
    long_dir, long_leaf = "d" * 300, "%C3%A9" * 128  # 768 chars: the longest escaped name
    key = f"ns/{long_dir}/{long_leaf}"
    fired = _event_watch(other, key)
    entry = backend.create(key, b"v", ephemeral=True)
    assert entry is not None and entry.key == key
    wait_event(fired, what="watch on a hashed name")
    assert other.get(key) == entry
    assert [e.key for e in other.list("ns/")] == [key]
    assert [e.key for e in other.list(f"ns/{long_dir[:50]}")] == [key]
    assert other.list(f"ns/{long_dir}/x") == []
    seq = other.create_sequential(f"ns/{long_dir}/", b"s", ephemeral=False)
    assert [e.key for e in other.list(f"ns/{long_dir}/")] == sorted([key, seq.key])
    for dirpath, dirnames, filenames in os.walk(root):
        assert all(len(name.encode()) <= 255 for name in dirnames + filenames), dirpath
    assert other.delete(key) and other.get(key) is None


def test_a_hashed_directory_left_unnamed_by_a_crash_is_named_by_the_next_user(make: Make, root: Path) -> None:
    backend = make()
    long_dir = "n" * 250
    backend.create(f"ns/{long_dir}/first", b"")
    hashed = next(p for p in (root / "ns.d").iterdir() if p.name.endswith(".d"))
    (hashed / ".name").unlink()  # as if its maker died between mkdir and naming it
    assert make().create(f"ns/{long_dir}/second", b"") is not None
    assert [e.key for e in make().list("ns/")] == [f"ns/{long_dir}/first", f"ns/{long_dir}/second"]


def test_compare_and_set_and_delete_check_versions(make: Make) -> None:
    a, b = make(), make()
    entry = a.create("ns/m", b"1", ephemeral=True)
    assert entry is not None
    assert b.compare_and_set("ns/m", b"2", entry.version + 100) is None
    updated = b.compare_and_set("ns/m", b"a longer value than before", entry.version)
    assert updated is not None and updated.version > entry.version and updated.owner == entry.owner
    shorter = a.compare_and_set("ns/m", b"3", updated.version)
    assert shorter is not None and a.get("ns/m") == shorter
    assert not b.delete("ns/m", version=entry.version)
    assert b.delete("ns/m", version=shorter.version)
    assert not a.delete("ns/m")
    assert a.create("ns/m", b"again", ephemeral=True) is not None


def test_eviction_removes_keys_for_everybody_and_tells_the_owner(make: Make) -> None:
    owner, evicter = make(), make()
    lost = threading.Event()
    owner.set_session_listener(lost.set)
    session = owner._session.id  # type: ignore[union-attr]
    assert owner.create("ns/old/k", b"", ephemeral=True) is not None
    gone = _event_watch(evicter, "ns/old/k")
    assert evicter.session_last_seen(session) is not None
    assert evicter.expire_session(session)
    assert not evicter.expire_session(session)
    wait_event(gone, what="evicted key deleted")
    wait_event(lost, what="owner told of its eviction")
    assert evicter.get("ns/old/k") is None and evicter.session_last_seen(session) is None
    for key in ("ns/old/k2", "ns/new/k"):  # a directory it used before, and a new one
        with pytest.raises(moot.SessionExpired):
            owner.create(key, b"", ephemeral=True)
    with pytest.raises(moot.SessionExpired):
        owner.refresh_session()
    assert evicter.list("ns/") == []
    owner.close_session()
    owner.open_session(2)
    assert owner.create("ns/old/k", b"", ephemeral=True) is not None


def test_refresh_and_last_seen(make: Make) -> None:
    a, b = make(), make()
    session = a._session.id  # type: ignore[union-attr]
    before = b.session_last_seen(session)
    a.refresh_session()
    after = b.session_last_seen(session)
    assert before is not None and after is not None and after >= before
    assert b.session_last_seen("0" * 32) is None and b.session_last_seen("../etc") is None
    assert not b.expire_session("../../x")
    a.close_session()
    assert b.session_last_seen(session) is None
    with pytest.raises(moot.SessionExpired):
        a.refresh_session()
    with pytest.raises(moot.SessionExpired):
        a.create("k", b"", ephemeral=True)


@pytest.mark.parametrize("key", ["../x", "a//b", "a/.b", "/a", "a/b/", "", "a/b\x00", "a/ü"])
def test_keys_that_could_escape_the_root_are_refused(make: Make, key: str) -> None:
    with pytest.raises(moot.InvalidArgument):
        make().create(key, b"")


def test_root_is_private_and_bad_urls_fail_clearly(make: Make, root: Path, tmp_path: Path) -> None:
    make()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    with pytest.raises(moot.InvalidURL):
        FileBackend(parse_url("file://somehost/dir"), {}).connect(1)
    (tmp_path / "plain-file").write_text("")
    with pytest.raises(moot.ConfigurationError):  # not ConnectionLost: retrying cannot help
        FileBackend(parse_url(f"file://{tmp_path}/plain-file/sub"), {}).connect(1)


def test_close_cleans_up_and_stops_the_watch_thread(make: Make, root: Path) -> None:
    a, b = make(), make()
    b.watch("ns/", lambda: None)
    entry, queue = a.enqueue("ns/q/", b"")
    assert queue == [entry]
    a.close()
    b.close()
    a.close()
    with pytest.raises(moot.CoordinatorClosed):
        a.get("ns/q/x")
    assert not [t for t in threading.enumerate() if t.name == "moot-file-inotify"]
    queue_dir = root / "ns.d" / "q.d"
    assert _names(queue_dir) == [".lock"]  # no key left behind
    assert _names(root / ".sessions.3") == []
    assert (queue_dir / ".lock").read_bytes()[40:44] == bytes(4)  # nor in the directory's slot


def test_coordinator_round_trip(root: Path) -> None:
    with moot.connect(f"file://{root}", member_id="me", ttl=2) as coord:
        with coord.lock("volume", timeout=5) as held:
            assert held.token is not None
            info = coord.lock_info("volume")
            assert info is not None and info.holder == "me"
        assert coord.lock_info("volume") is None


def test_tokens_keep_growing_when_a_crash_lost_the_counters(tmp_path: Path) -> None:
    """A machine crash may lose the last unsynced writes of the directory
    counters; tokens must not go back (they never fall below the clock)."""
    url = f"file://{tmp_path}"
    with moot.connect(url, member_id="before", ttl=2) as coord:
        tokens = []
        for _ in range(3):
            with coord.lock("volume") as held:
                tokens.append(held.token)
    for directory, _, files in os.walk(tmp_path):
        if ".lock" in files:  # what the crash left: every counter back at zero
            with open(os.path.join(directory, ".lock"), "r+b") as record:
                record.write((0).to_bytes(8, "little"))
    with moot.connect(url, member_id="after", ttl=2) as coord, coord.lock("volume") as held:
        assert held.token is not None and held.token > max(tokens)  # type: ignore[type-var]


def test_a_watch_is_woken_once_a_closed_sessions_flock_is_dropped(make: Make, root: Path) -> None:
    """inotify reports the owner's last close of its session file a moment
    before the kernel drops the flock: the watch must be woken after the
    drop, not at the close (a waiter would still see the owner alive). Played
    here with the two apart: a close reported while the flock is held, then
    the flock dropped without any close."""
    owner, observer = make(), make()
    session = owner._session
    assert session is not None
    assert owner.create("ns/k", b"", ephemeral=True) is not None
    fired = _event_watch(observer, "ns/k")
    os.close(os.open(root / ".sessions.3" / session.id, os.O_WRONLY))  # IN_CLOSE_WRITE, flock still held
    wait_until(lambda: any(t.name == "moot-file-inotify-drop" for t in threading.enumerate()),
               what="the close seen while the flock is held")
    assert observer.get("ns/k") is not None
    fired.clear()  # a wake-up at the close alone would be lost: the waiter would see the owner alive
    fcntl.flock(session.fd, fcntl.LOCK_UN)  # the owner's keys die, with no further event
    wait_event(fired, timeout=AT_ONCE, what="watch woken once the flock is gone")
    assert observer.get("ns/k") is None


# -- the directory's slot: an uncontended queue's entry kept in its .lock -----
QUEUE = "ns/lock/x/q/"


def _queue_dir(root: Path) -> Path:
    return root / "ns.d" / "lock.d" / "x.d" / "q.d"


def _in_slot(root: Path, key: str) -> bool:
    """Whether ``key`` is held in its directory's slot (and in no key file)."""
    lock = os.open(_queue_dir(root) / ".lock", os.O_RDONLY)
    try:
        held = slot.read(lock)
    finally:
        os.close(lock)
    name = key.rsplit("/", 1)[1]
    return held is not None and held.name == name and name not in _names(_queue_dir(root))


def test_an_uncontended_entry_lives_in_the_slot_and_reads_like_a_key_file(make: Make, root: Path) -> None:
    owner, reader = make(), make()
    mine, queue = owner.enqueue(QUEUE, b"v")
    assert queue == [mine] and _in_slot(root, mine.key)
    assert _names(_queue_dir(root)) == [".lock"]
    assert reader.get(mine.key) == mine and owner.get(mine.key) == mine
    assert reader.list(QUEUE) == [mine] and reader.list("ns/") == [mine]
    assert reader.enqueue("ns/lock/other/q/", b"")[1][0].owner == reader._session.id  # type: ignore[union-attr]
    assert owner.delete(mine.key)
    assert reader.get(mine.key) is None and reader.list(QUEUE) == []
    assert not owner.delete(mine.key)
    again, queue = owner.enqueue(QUEUE, b"w")
    assert queue == [again] and again.seq is not None and mine.seq is not None and again.seq > mine.seq
    assert _in_slot(root, again.key)


def test_a_second_enqueue_settles_the_slot_and_is_woken_by_its_release(make: Make, root: Path) -> None:
    holder, waiter = make(), make()
    held, _ = holder.enqueue(QUEUE, b"holder")
    assert _in_slot(root, held.key)
    mine, queue = waiter.enqueue(QUEUE, b"waiter")
    assert queue == [held, mine]  # the same entry (name, value, version, seq, owner), now a key file
    assert not _in_slot(root, held.key) and held.key.rsplit("/", 1)[1] in _names(_queue_dir(root))
    woken = _event_watch(waiter, held.key)  # how a lock waiter watches its predecessor
    assert not woken.is_set()
    assert holder.delete(held.key)
    wait_event(woken, timeout=AT_ONCE, what="the waiter woken by the release of a settled slot")
    assert waiter.list(QUEUE) == [mine]
    assert not holder.delete(held.key)


def test_a_key_watch_settles_a_slot_and_fires_on_its_release(make: Make, root: Path) -> None:
    holder, watcher = make(), make()
    held, _ = holder.enqueue(QUEUE, b"")
    woken = _event_watch(watcher, held.key)
    assert not _in_slot(root, held.key) and watcher.get(held.key) == held
    assert not woken.is_set()
    assert holder.delete(held.key)
    wait_event(woken, timeout=AT_ONCE, what="a key watch on a slot's entry woken by its release")


def test_a_prefix_watch_is_woken_by_a_slot_taken_and_emptied(make: Make, root: Path) -> None:
    owner, watcher = make(), make()
    watcher.list(QUEUE)  # the directory exists
    changes = threading.Semaphore(0)
    watcher.watch(QUEUE, changes.release)
    mine, _ = owner.enqueue(QUEUE, b"")
    assert changes.acquire(timeout=AT_ONCE), "a prefix watch woken by an entry put in the slot"
    assert _in_slot(root, mine.key)
    while changes.acquire(timeout=0):
        pass
    assert owner.delete(mine.key)
    assert changes.acquire(timeout=AT_ONCE), "a prefix watch woken by the slot emptied"
    assert watcher.list(QUEUE) == []


def test_a_sigkilled_slot_holder_frees_it_at_once_and_wakes_prefix_watchers(make: Make, root: Path) -> None:
    observer = make()
    proc, key = _holder(root, "slot")
    try:
        assert _in_slot(root, key) and observer.get(key) is not None
        prefix = _event_watch(observer, QUEUE)
    finally:
        _kill(proc)
    wait_event(prefix, timeout=AT_ONCE, what="a prefix watch woken by the slot holder's death")
    assert observer.get(key) is None and observer.list(QUEUE) == []
    mine, queue = observer.enqueue(QUEUE, b"next")  # the dead entry is replaced in the slot
    assert queue == [mine] and mine.seq is not None and mine.seq > int(key.rsplit("/", 1)[1])
    assert _in_slot(root, mine.key)


def test_a_waiter_behind_a_sigkilled_slot_holder_is_woken_at_once(make: Make, root: Path) -> None:
    waiter = make()
    proc, key = _holder(root, "slot")
    try:
        assert _in_slot(root, key)
        mine, queue = waiter.enqueue(QUEUE, b"waiter")
        assert [e.key for e in queue] == [key, mine.key]
        woken = _event_watch(waiter, key)
    finally:
        _kill(proc)
    wait_event(woken, timeout=AT_ONCE, what="the waiter woken by the slot holder's death")
    assert waiter.list(QUEUE) == [mine]


def test_an_evicted_slot_holder_loses_its_entry(make: Make, root: Path) -> None:
    holder, evicter = make(), make()
    held, _ = holder.enqueue(QUEUE, b"")
    assert _in_slot(root, held.key)
    changed = _event_watch(evicter, QUEUE)
    assert evicter.expire_session(holder._session.id)  # type: ignore[union-attr]
    wait_event(changed, what="a prefix watch woken by the eviction")
    assert evicter.get(held.key) is None and evicter.list(QUEUE) == []
    assert not holder.delete(held.key)  # the release tells the holder it had lost the entry
    with pytest.raises(moot.SessionExpired):
        holder.enqueue(QUEUE, b"")
    mine, queue = evicter.enqueue(QUEUE, b"")
    assert queue == [mine] and _in_slot(root, mine.key)


@pytest.mark.parametrize("value, start", [(bytes(range(256)) * 2, ""), (b"v", "x" * 65)],
                         ids=["value-over-the-slot", "name-start-over-the-slot"])
def test_an_entry_too_large_for_the_slot_takes_a_key_file(make: Make, root: Path, value: bytes, start: str) -> None:
    owner, reader = make(), make()
    mine, queue = owner.enqueue(QUEUE + start, value)
    assert queue == [mine] and mine.value == value
    assert _names(_queue_dir(root)).count(mine.key.rsplit("/", 1)[1]) == 1  # a key file, not the slot
    assert reader.get(mine.key) == mine and reader.list(QUEUE) == [mine]
    assert owner.delete(mine.key)
    assert reader.list(QUEUE) == [] and [n for n in _names(_queue_dir(root)) if not n.startswith(".")] == []


@pytest.mark.parametrize("torn", [b"slot", b"slot" + bytes(20), b"slot\xff\xff" + bytes(42)],
                         ids=["magic-only", "short-record", "lengths-past-the-end"])
def test_a_torn_slot_reads_as_empty_and_is_emptied(make: Make, root: Path, torn: bytes) -> None:
    backend = make()
    first, _ = backend.enqueue(QUEUE, b"")
    assert backend.delete(first.key)
    lock = _queue_dir(root) / ".lock"
    record = lock.read_bytes()[:40]
    lock.write_bytes(record + torn)  # what a machine crash in the middle of a write could leave
    assert backend.list(QUEUE) == [] and backend.get(f"{QUEUE}{first.seq:020d}") is None
    mine, queue = backend.enqueue(QUEUE, b"")  # the torn slot emptied, then taken
    assert queue == [mine] and _in_slot(root, mine.key)


# -- owners known alive: names() probes no owner this process knows alive ----
MEMBERS = "ns/group/g/members/"


def _known(watcher: Inotify, sessions: str) -> tuple[frozenset[str], int]:
    """The owners ``watcher`` knows alive under ``sessions``, and the era (all events read first)."""
    known = watcher.known_alive(sessions)
    assert known is not None, "events could not be caught up with"
    return known


def _watcher_of(backend: FileBackend) -> tuple[Inotify, str]:
    watcher = backend._watcher
    assert watcher is not None
    return watcher, backend._sessions.path


def test_names_drop_a_sigkilled_owner_at_once_though_it_was_known_alive(make: Make, root: Path) -> None:
    observer = make()
    watcher, sessions = _watcher_of(observer)
    proc, _ = _holder(root)
    try:
        entry = observer.get(f"{MEMBERS}m")
        assert entry is not None and entry.owner is not None
        assert observer.names(MEMBERS) == ["m"]
        assert entry.owner in _known(watcher, sessions)[0]  # the next listing will not probe it
        assert observer.names(MEMBERS) == ["m"]
    finally:
        _kill(proc)
    assert observer.names(MEMBERS) == []  # no wait: its close was queued before its flock was dropped


def test_an_owner_whose_close_was_read_is_never_remembered_alive(make: Make, root: Path) -> None:
    observer = make()
    watcher, sessions = _watcher_of(observer)
    proc, _ = _holder(root)
    entry = observer.get(f"{MEMBERS}m")
    assert entry is not None and entry.owner is not None
    known = _known(watcher, sessions)
    assert entry.owner not in known[0]
    _kill(proc)  # dies after a listing probed it alive, before that listing remembers it
    wait_until(lambda: entry.owner in watcher._closed, what="the owner's close read")
    watcher.remember_alive(sessions, [entry.owner], known[1])
    assert entry.owner not in _known(watcher, sessions)[0]
    assert observer.names(MEMBERS) == []


def test_a_lost_event_forgets_every_owner_known_alive(make: Make, root: Path) -> None:
    observer = make()
    watcher, sessions = _watcher_of(observer)
    proc, _ = _holder(root)
    try:
        assert observer.names(MEMBERS) == ["m"]
        known = _known(watcher, sessions)
        assert len(known[0]) == 1
        with watcher._lock:  # the kernel's queue overflowed: closes may have been lost
            watcher._route(struct.pack("iIII", -1, 0x4000, 0, 0))
        after = _known(watcher, sessions)
        assert after[0] == frozenset() and after[1] != known[1]
        watcher.remember_alive(sessions, known[0], known[1])  # a listing from before the loss
        assert _known(watcher, sessions)[0] == frozenset()
        assert observer.names(MEMBERS) == ["m"]  # probed again
    finally:
        _kill(proc)


def test_names_read_the_closes_queued_before_them_themselves(make: Make, root: Path) -> None:
    observer = make()
    shared = observer._watcher
    private = Inotify()  # whose reader thread is stopped: only a listing reads its events
    os.write(private._wake_w, b"x")
    private._thread.join(BOUND)
    assert not private._thread.is_alive()
    observer._watcher = private
    try:
        proc, _ = _holder(root)
        try:
            assert observer.names(MEMBERS) == ["m"]
            assert len(_known(private, observer._sessions.path)[0]) == 1
        finally:
            _kill(proc)
        assert private._pending()  # the close is queued, unread
        assert observer.names(MEMBERS) == []
        assert not private._pending()
    finally:
        observer._watcher = shared
        private._close_fds()


# -- spares: a delete frees its own key's spare, whatever else the session owns ----
def test_a_versioned_delete_among_many_keys_does_not_look_at_the_others(
        make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = make()
    entries = [backend.create(f"ns/g/members/m{i:04d}", b"", ephemeral=True) for i in range(300)]
    stats = 0
    real_stat = os.stat

    def counting_stat(*args: object, **kwargs: object) -> os.stat_result:
        nonlocal stats
        stats += 1
        return real_stat(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting_stat)
    for entry in entries[:10]:
        assert entry is not None and backend.delete(entry.key, entry.version)  # how a group member leaves
    monkeypatch.undo()
    assert stats <= 10, f"{stats} stat calls for 10 deletes: the session's other keys were looked at"
    assert len(backend.list("ns/g/members/")) == 290


def test_the_spare_of_a_key_someone_else_deleted_is_reused(make: Make, root: Path) -> None:
    owner, other = make(), make()
    session = owner._session.id  # type: ignore[union-attr]
    directory = root / "ns.d" / "g.d"

    def spares() -> list[str]:
        return [n for n in _names(directory) if n.startswith(f".f-{session}-")]

    first = owner.create("ns/g/k", b"", ephemeral=True)
    assert first is not None and other.delete("ns/g/k")
    assert owner.create("ns/g/k", b"again", ephemeral=True) is not None
    assert len(spares()) == 2  # the first key's spare is free now, and known to be
    assert owner.create("ns/g/k2", b"", ephemeral=True) is not None
    assert len(spares()) == 2, spares()  # reused, not a third
