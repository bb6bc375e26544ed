"""The primitive contract: every guarantee that ``moot/backends/base.py``
states, checked directly on raw backend objects (no coordinator, no recipe),
unchanged on every backend.

Each test gets its own key namespace (``ns``) and connected backend objects
from ``make_backend`` (tests/conftest.py), closed after it. Waits are bounded
(tests/waiting.py); nothing sleeps and hopes. Watches may be called
spuriously, so tests assert that a call came, never that exactly one did
(except after ``cancel()``, when none may come).
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from moot.backends.base import MAX_VALUE_BYTES, Backend, Entry
from moot.deadline import bounded
from moot.errors import ConnectionLost, SessionExpired
from moot.waits import Wake
from tests.conftest import MakeBackend
from tests.faults.proxy import Proxy
from tests.forking import in_forked_child
from tests.waiting import BOUND, wait_until

#: TTL of sessions that tests let run out (short: those tests wait for it).
SHORT_TTL = 1.0
#: The caller's deadline in the deadline test, and how late a call may return.
DEADLINE = 0.25
SLACK = 0.75
#: session_last_seen() is an estimate made from the engine's clock and the
#: session's remaining TTL, both in milliseconds (redis): it may step back that much.
LAST_SEEN_PRECISION = 0.01
#: How long after its TTL ran out an unrefreshed session may still be seen.
EXPIRY_SLACK = 3.0


#: Contract tests a backend fails today, by test id: each runs and is reported
#: as xfailed; ``strict`` turns a fixed one red until its line is removed here.
KNOWN_FAILURES = {
}


@pytest.fixture(autouse=True)
def known_failure(request: pytest.FixtureRequest) -> None:
    reason = KNOWN_FAILURES.get(request.node.name)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture
def ns(namespace: str) -> str:
    """This test's own key prefix."""
    return f"{namespace}/"


class Calls:
    """A watch callback that counts its calls and wakes waiters."""

    def __init__(self) -> None:
        self.count = 0
        self.threads: set[int] = set()
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.count += 1
            self.threads.add(threading.get_ident())
            self._changed.notify_all()

    def mark(self) -> int:
        with self._changed:
            return self.count

    def wait_past(self, mark: int, what: str) -> None:
        """Return once called after ``mark`` (a value of :meth:`mark`)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.count > mark, BOUND):
                raise AssertionError(f"timed out after {BOUND}s waiting for {what}")


def watch(backend: Backend, key: str) -> Calls:
    calls = Calls()
    backend.watch(key, calls)
    return calls


def same(a: Entry | None, b: Entry | None) -> bool:
    """Equal as stored: key, value, version, owner (``seq`` may be set for any key)."""
    assert a is not None and b is not None
    return (a.key, a.value, a.version, a.owner) == (b.key, b.value, b.version, b.owner)


def session_of(backend: Backend, ns: str) -> str:
    """The id of ``backend``'s current session (the owner of its ephemeral keys)."""
    probe = backend.create(f"{ns}session-probe-{id(backend)}", b"", ephemeral=True)
    assert probe is not None and probe.owner is not None
    assert backend.delete(probe.key) is True
    return probe.owner


def test_ping_describes_the_server(make_backend: MakeBackend) -> None:
    described = make_backend(ttl=None).ping()
    assert isinstance(described, str) and described.strip()


# -- keys ---------------------------------------------------------------------------
def test_get_of_an_absent_key_is_none(make_backend: MakeBackend, ns: str) -> None:
    assert make_backend().get(f"{ns}nothing") is None


def test_create_if_absent_persistent(make_backend: MakeBackend, ns: str) -> None:
    a, b = make_backend(), make_backend()
    key = f"{ns}p"
    made = a.create(key, b"first")
    assert made is not None
    assert (made.key, made.value, made.owner) == (key, b"first", None)
    assert isinstance(made.version, int)
    assert same(a.get(key), made) and same(b.get(key), made)
    assert a.create(key, b"second") is None  # exists: not overwritten, by anybody
    assert b.create(key, b"second") is None
    assert b.create(key, b"second", ephemeral=True) is None
    assert same(b.get(key), made)
    a.close_session()  # a persistent key outlives its creator's session and backend object
    a.close()
    assert same(b.get(key), made)


def test_create_if_absent_ephemeral(make_backend: MakeBackend, ns: str) -> None:
    a, b = make_backend(), make_backend()
    key = f"{ns}e"
    made = a.create(key, b"mine", ephemeral=True)
    assert made is not None
    assert (made.key, made.value) == (key, b"mine")
    assert made.owner is not None and made.owner == session_of(a, ns)
    assert made.owner != session_of(b, ns)
    assert b.create(key, b"theirs", ephemeral=True) is None
    assert b.create(key, b"theirs") is None
    got = b.get(key)
    assert same(got, made)


def test_versions_change_on_every_write_and_are_never_reused(make_backend: MakeBackend, ns: str) -> None:
    a, b = make_backend(), make_backend()
    for ephemeral in (False, True):
        key = f"{ns}v-{ephemeral}"
        seen: list[int] = []
        entry = a.create(key, b"1", ephemeral=ephemeral)
        assert entry is not None
        seen.append(entry.version)
        for value in (b"2", b"2", b""):  # the same value again is still a write
            entry = b.compare_and_set(key, value, entry.version)
            assert entry is not None and entry.value == value
            seen.append(entry.version)
        assert a.delete(key) is True
        again = a.create(key, b"1", ephemeral=ephemeral)  # a re-created key: no ABA
        assert again is not None
        seen.append(again.version)
        assert len(set(seen)) == len(seen), seen
        for stale in seen[:-1]:
            assert b.compare_and_set(key, b"x", stale) is None
            assert b.delete(key, stale) is False
        assert same(b.get(key), again)


def test_compare_and_set_keeps_owner_and_seq(make_backend: MakeBackend, ns: str) -> None:
    owner, other = make_backend(), make_backend()
    key = f"{ns}m"
    entry = owner.create(key, b"1", ephemeral=True)
    assert entry is not None
    updated = other.compare_and_set(key, b"2", entry.version)  # written by another session
    assert updated is not None
    assert (updated.key, updated.value, updated.owner) == (key, b"2", entry.owner)
    assert updated.version != entry.version
    assert same(other.get(key), updated) and same(owner.get(key), updated)

    queued = owner.create_sequential(f"{ns}q/", b"w")
    moved = other.compare_and_set(queued.key, b"w2", queued.version)
    assert moved is not None and (moved.seq, moved.owner) == (queued.seq, queued.owner)
    reread = other.get(queued.key)
    assert reread is not None and reread.seq == queued.seq and reread.owner == queued.owner
    persistent = other.create_sequential(f"{ns}q/", b"p", ephemeral=False)
    kept = owner.compare_and_set(persistent.key, b"p2", persistent.version)
    assert kept is not None and (kept.seq, kept.owner) == (persistent.seq, None)

    # The owner really is kept: ending it takes the keys another session wrote.
    gone = watch(other, key)
    mark = gone.mark()
    assert entry.owner is not None and other.expire_session(entry.owner) is True
    gone.wait_past(mark, "the watch on the rewritten ephemeral key at its owner's end")
    assert other.get(key) is None and other.get(queued.key) is None
    assert other.get(persistent.key) is not None


def test_compare_and_set_fails_on_a_stale_version_or_an_absent_key(make_backend: MakeBackend, ns: str) -> None:
    backend = make_backend()
    key = f"{ns}k"
    assert backend.compare_and_set(key, b"x", 0) is None
    assert backend.compare_and_set(key, b"x", 1) is None
    assert backend.get(key) is None  # CAS never creates
    entry = backend.create(key, b"1")
    assert entry is not None
    updated = backend.compare_and_set(key, b"2", entry.version)
    assert updated is not None
    assert backend.compare_and_set(key, b"3", entry.version) is None
    assert same(backend.get(key), updated)
    assert backend.delete(key) is True
    assert backend.compare_and_set(key, b"4", updated.version) is None
    assert backend.get(key) is None


def test_delete_with_and_without_version(make_backend: MakeBackend, ns: str) -> None:
    a, b = make_backend(), make_backend()
    key = f"{ns}d"
    assert b.delete(key) is False
    assert b.delete(key, 1) is False
    entry = a.create(key, b"1", ephemeral=True)
    assert entry is not None
    assert b.delete(key, entry.version + 1000) is False
    assert same(b.get(key), entry)
    assert b.delete(key, entry.version) is True  # another session's ephemeral key, at its version
    assert a.get(key) is None and b.get(key) is None
    assert b.delete(key, entry.version) is False
    again = a.create(key, b"2")
    assert again is not None
    assert b.delete(key) is True  # any version
    assert b.delete(key) is False
    assert a.get(key) is None


@pytest.mark.parametrize("version", [None, "its own", "another"])
def test_delete_after_the_owners_session_ended_answers_false_and_leaves_nothing(
        make_backend: MakeBackend, ns: str, version: str | None) -> None:
    """An ephemeral entry whose owner's session ended is absent: deleting it
    (nothing read it since the end, so an engine that removes dead entries
    lazily meets it in the delete itself) answers False, at any version, and
    nothing of it is left. The session ends by its TTL, or, where the
    engine's client keeps it alive while the process lives, by an expiry."""
    owner, other = make_backend(ttl=None), make_backend()
    session = owner.open_session(SHORT_TTL)
    key = f"{ns}d/e"
    entry = owner.create(key, b"", ephemeral=True)
    assert entry is not None
    if owner.kept_alive_by_client:
        assert other.expire_session(session) is True
    granted = owner.granted_ttl or SHORT_TTL
    wait_until(lambda: other.session_last_seen(session) is None, timeout=granted + EXPIRY_SLACK + BOUND,
               what="the owner's session to end")
    asked = {None: None, "its own": entry.version, "another": entry.version + 1}[version]
    assert other.delete(key, asked) is False
    assert other.get(key) is None and other.list(f"{ns}d/") == []


def test_list_by_prefix_is_recursive_sorted_and_live_only(make_backend: MakeBackend, ns: str) -> None:
    a, b = make_backend(), make_backend()
    under = ["9", "10", "B", "a", "_", "-", "%41", "x/deep", "x/deeper/still"]
    for i, name in enumerate(under):  # not in key order
        assert a.create(f"{ns}d/{name}", name.encode(), ephemeral=i % 2 == 0) is not None
    assert a.create(f"{ns}d", b"the prefix without its slash") is not None
    assert a.create(f"{ns}dd", b"a sibling sharing the text") is not None
    dying = b.create(f"{ns}d/dying", b"", ephemeral=True)
    queued = b.create_sequential(f"{ns}d/q/", b"")
    assert dying is not None
    b.close_session()  # only live entries are listed

    listed = a.list(f"{ns}d/")
    expected = sorted(f"{ns}d/{name}" for name in under)
    assert [e.key for e in listed] == expected
    assert [e.value for e in listed] == [k.removeprefix(f"{ns}d/").encode() for k in expected]
    for entry in listed:
        assert same(a.get(entry.key), entry)
    assert [e.key for e in a.list(ns)] == sorted([*expected, f"{ns}d", f"{ns}dd"])
    assert [e.key for e in a.list(f"{ns}d/x/")] == [f"{ns}d/x/deep", f"{ns}d/x/deeper/still"]
    assert a.get(f"{ns}d/x") is None and a.get(f"{ns}d/x/deeper") is None  # a mere parent is no key
    assert a.get(dying.key) is None and a.get(queued.key) is None
    assert a.list(f"{ns}d/q/") == [] and a.list(f"{ns}missing/") == []


def test_names_are_the_live_entries_directly_under_a_directory(make_backend: MakeBackend, ns: str) -> None:
    a, b = make_backend(), make_backend()
    for i, name in enumerate(["m2", "m10", "%41", "-", "m1"]):
        assert a.create(f"{ns}g/members/{name}", b"{}", ephemeral=i % 2 == 0) is not None
    assert a.create(f"{ns}g/meta", b"beside the directory") is not None
    assert a.create(f"{ns}g/members", b"the directory without its slash") is not None
    assert b.create(f"{ns}g/members/dying", b"{}", ephemeral=True) is not None
    assert a.names(f"{ns}g/members/") == sorted(["m2", "m10", "%41", "-", "m1", "dying"])
    b.close_session()
    assert a.names(f"{ns}g/members/") == sorted(["m2", "m10", "%41", "-", "m1"])
    assert a.delete(f"{ns}g/members/m10") is True
    assert a.names(f"{ns}g/members/") == sorted(["m2", "%41", "-", "m1"])
    assert a.names(f"{ns}missing/") == []


def test_a_key_and_keys_below_it_coexist(make_backend: MakeBackend, ns: str) -> None:
    backend = make_backend()
    below = backend.create(f"{ns}p/c", b"below")
    made = backend.create(f"{ns}p", b"parent")
    assert below is not None and made is not None and made.value == b"parent"
    assert [e.key for e in backend.list(ns)] == [f"{ns}p", f"{ns}p/c"]
    assert backend.delete(f"{ns}p", made.version) is True
    assert same(backend.get(f"{ns}p/c"), below)
    assert [e.key for e in backend.list(ns)] == [f"{ns}p/c"]


# -- sequence -----------------------------------------------------------------------
def test_create_sequential_seq_strictly_increases_across_backend_objects(
        make_backend: MakeBackend, ns: str) -> None:
    a, b = make_backend(), make_backend()
    prefix = f"{ns}q/"
    made: list[Entry] = []
    for i in range(6):
        creator = (a, b)[i % 2]
        entry = creator.create_sequential(prefix, str(i).encode(), ephemeral=i % 3 != 0)
        made.append(entry)
        assert entry.key.startswith(prefix) and "/" not in entry.key.removeprefix(prefix)
        assert entry.key.removeprefix(prefix)  # a key directly under the prefix
        assert entry.value == str(i).encode()
        assert entry.owner == (session_of(creator, ns) if i % 3 != 0 else None)
        assert same(a.get(entry.key), entry) and a.get(entry.key).seq == entry.seq  # type: ignore[union-attr]
    seqs = [e.seq for e in made]
    assert all(isinstance(s, int) for s in seqs)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs  # type: ignore[type-var]
    assert len({e.key for e in made}) == len(made)
    default = a.create_sequential(prefix, b"")
    assert default.owner == session_of(a, ns)  # ephemeral unless told otherwise
    listed = {e.key: e.seq for e in b.list(prefix)}
    assert listed == {e.key: e.seq for e in [*made, default]}


def test_seq_keeps_increasing_after_deletes_and_a_client_restart(make_backend: MakeBackend, ns: str) -> None:
    prefix = f"{ns}q/"
    first = make_backend()
    made = [first.create_sequential(prefix, b"", ephemeral=False).seq for _ in range(3)]
    seqs = [seq for seq in made if seq is not None]
    assert len(seqs) == 3
    for entry in first.list(prefix):
        assert first.delete(entry.key) is True
    first.close()  # nothing left under the prefix, and its creator is gone
    restarted = make_backend()
    later = restarted.create_sequential(prefix, b"")
    other = make_backend().create_sequential(prefix, b"", ephemeral=False)
    assert later.seq is not None and other.seq is not None
    assert max(seqs) < later.seq < other.seq


def test_create_sequential_from_many_threads(make_backend: MakeBackend, ns: str) -> None:
    backend = make_backend()
    prefix = f"{ns}q/"
    per_thread: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            per_thread[n] = [backend.create_sequential(prefix, b"").seq or 0 for _ in range(10)]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert not errors and len(per_thread) == 4
    every = [s for seqs in per_thread.values() for s in seqs]
    assert len(set(every)) == 40
    assert all(seqs == sorted(seqs) for seqs in per_thread.values())
    assert len(backend.list(prefix)) == 40


def test_enqueue_returns_the_entry_and_the_live_queue(make_backend: MakeBackend, ns: str) -> None:
    a, b, c = make_backend(), make_backend(), make_backend()
    prefix = f"{ns}q/"
    theirs, queue = b.enqueue(prefix, b"b")
    assert queue == [theirs]
    assert theirs.owner == session_of(b, ns)
    gone, _ = c.enqueue(prefix, b"c")
    c.close_session()
    mine, queue = a.enqueue(prefix, b"a")
    assert mine.key.startswith(prefix) and "/" not in mine.key.removeprefix(prefix)
    assert mine.value == b"a" and mine.owner == session_of(a, ns)
    assert mine.seq is not None and theirs.seq is not None and gone.seq is not None
    assert mine.seq > gone.seq > theirs.seq
    assert [e.key for e in queue] == sorted([theirs.key, mine.key])
    assert all(same(x, y) for x, y in zip(queue, a.list(prefix), strict=True))
    assert {e.key: e.seq for e in queue} == {theirs.key: theirs.seq, mine.key: mine.seq}


# -- sessions -----------------------------------------------------------------------
def test_granted_ttl_is_none_or_a_positive_number(make_backend: MakeBackend) -> None:
    backend = make_backend(ttl=None)
    for ttl in (SHORT_TTL, 5.0):
        backend.open_session(ttl)
        granted = backend.granted_ttl
        assert granted is None or (type(granted) in (int, float) and granted > 0), granted
        backend.refresh_session()
        backend.close_session()


def test_close_session_ends_ephemeral_keys_and_fires_watches(make_backend: MakeBackend, ns: str) -> None:
    owner, watcher = make_backend(), make_backend()
    session = session_of(owner, ns)
    key, prefix = f"{ns}g/m", f"{ns}g/"
    assert owner.create(key, b"", ephemeral=True) is not None
    queued, _ = owner.enqueue(f"{ns}q/", b"")
    kept = owner.create(f"{ns}g/persistent", b"")
    assert kept is not None
    on_key, on_prefix, on_queued = watch(watcher, key), watch(watcher, prefix), watch(watcher, queued.key)
    marks = on_key.mark(), on_prefix.mark(), on_queued.mark()
    assert watcher.session_last_seen(session) is not None

    owner.close_session()
    on_key.wait_past(marks[0], "the exact watch at close_session")
    on_prefix.wait_past(marks[1], "the prefix watch at close_session")
    on_queued.wait_past(marks[2], "the queue entry's watch at close_session")
    assert watcher.get(key) is None and watcher.get(queued.key) is None
    assert [e.key for e in watcher.list(prefix)] == [kept.key]
    assert watcher.session_last_seen(session) is None
    assert watcher.expire_session(session) is False
    owner.close_session()  # never raises for a session already gone
    with pytest.raises(SessionExpired):
        owner.refresh_session()

    renewed = owner.open_session(SHORT_TTL * 10)
    assert renewed != session
    entry = owner.create(key, b"again", ephemeral=True)
    assert entry is not None and entry.owner == renewed


def test_expire_session_from_another_backend_object(make_backend: MakeBackend, ns: str) -> None:
    owner, evicter = make_backend(), make_backend()
    session = session_of(owner, ns)
    key, prefix = f"{ns}g/m", f"{ns}g/"
    assert owner.create(key, b"", ephemeral=True) is not None
    queued, _ = owner.enqueue(f"{ns}q/", b"")
    kept = owner.create(f"{ns}g/persistent", b"")
    assert kept is not None
    on_key, on_prefix, on_queued = watch(evicter, key), watch(evicter, prefix), watch(evicter, queued.key)
    marks = on_key.mark(), on_prefix.mark(), on_queued.mark()

    assert evicter.expire_session(session) is True
    on_key.wait_past(marks[0], "the exact watch at eviction")
    on_prefix.wait_past(marks[1], "the prefix watch at eviction")
    on_queued.wait_past(marks[2], "the queue entry's watch at eviction")
    assert evicter.get(key) is None and evicter.get(queued.key) is None
    assert [e.key for e in evicter.list(prefix)] == [kept.key]
    assert evicter.session_last_seen(session) is None
    assert evicter.expire_session(session) is False
    with pytest.raises(SessionExpired):  # its owner learns on its next refresh
        owner.refresh_session()
    with pytest.raises(SessionExpired):
        owner.create(f"{ns}g/other", b"", ephemeral=True)
    assert evicter.get(f"{ns}g/other") is None
    owner.close_session()  # never raises for a session already gone
    renewed = owner.open_session(SHORT_TTL * 10)
    assert renewed != session and evicter.session_last_seen(renewed) is not None


def test_expire_and_last_seen_of_an_unknown_session(make_backend: MakeBackend, ns: str) -> None:
    backend, gone = make_backend(), make_backend()
    session = session_of(gone, ns)
    gone.close_session()
    assert backend.expire_session(session) is False
    assert backend.session_last_seen(session) is None
    for made_up in ("no-such-session", "0", "ffffffffffffffff"):
        assert backend.expire_session(made_up) is False, made_up
        assert backend.session_last_seen(made_up) is None, made_up


@pytest.mark.parametrize("ttl", [SHORT_TTL, 5.0])
def test_session_last_seen(make_backend: MakeBackend, ttl: float) -> None:
    before = time.time()
    owner, other = make_backend(ttl=None), make_backend()
    session = owner.open_session(ttl)
    seen = other.session_last_seen(session)
    assert seen is not None and before - 1.0 <= seen <= time.time() + 1.0, (before, seen)
    assert owner.session_last_seen(session) is not None
    owner.refresh_session()
    later = other.session_last_seen(session)
    assert later is not None and seen - LAST_SEEN_PRECISION <= later <= time.time() + 1.0, (seen, later)


def test_an_unrefreshed_session_lives_its_granted_ttl_then_ends(make_backend: MakeBackend, ns: str) -> None:
    """Session validity: not ended before a refresh's start plus granted_ttl;
    then (within a few seconds) its keys vanish, watches fire and its owner
    is told SessionExpired -- unless the engine's client keeps it alive while
    its process lives (``kept_alive_by_client``: then it must still be there)."""
    owner, watcher = make_backend(ttl=None), make_backend()
    opened = time.monotonic()
    session = owner.open_session(SHORT_TTL)
    granted = owner.granted_ttl or SHORT_TTL
    key, prefix = f"{ns}g/m", f"{ns}g/"
    assert owner.create(key, b"", ephemeral=True) is not None
    on_key, on_prefix = watch(watcher, key), watch(watcher, prefix)
    # Refresh once, half-way: the session must now outlive open + granted.
    wait_until(lambda: time.monotonic() >= opened + granted / 2, what="half the granted TTL")
    refreshed = time.monotonic()
    owner.refresh_session()
    granted = owner.granted_ttl or SHORT_TTL
    marks = on_key.mark(), on_prefix.mark()

    if owner.kept_alive_by_client:  # the engine's client keeps it alive while the process lives
        wait_until(lambda: time.monotonic() >= refreshed + granted + EXPIRY_SLACK, what="the TTL and its slack")
        assert watcher.get(key) is not None, "a session kept alive by its client ended without a refresh"
        owner.refresh_session()
        return

    def ended() -> bool:
        gone = watcher.get(key) is None
        if gone:  # the read returned now, so the end came before this instant
            assert time.monotonic() >= refreshed + granted, (
                f"ended {time.monotonic() - refreshed:.3f}s after the refresh started, "
                f"before the granted {granted}s")
        return gone

    wait_until(ended, timeout=refreshed + granted + EXPIRY_SLACK - time.monotonic(),
               what=f"the unrefreshed session to end within {EXPIRY_SLACK}s of its granted TTL")
    on_key.wait_past(marks[0], "the exact watch at expiry")
    on_prefix.wait_past(marks[1], "the prefix watch at expiry")
    wait_until(lambda: watcher.session_last_seen(session) is None, what="session_last_seen to be None")
    with pytest.raises(SessionExpired):
        owner.refresh_session()
    with pytest.raises(SessionExpired):
        owner.create(key, b"", ephemeral=True)
    with pytest.raises(SessionExpired):
        owner.enqueue(f"{ns}q/", b"")
    assert watcher.get(key) is None and watcher.list(f"{ns}q/") == []


def test_close_ends_the_session_cancels_watches_and_may_be_called_twice(
        make_backend: MakeBackend, ns: str) -> None:
    closing, watcher = make_backend(), make_backend()
    key = f"{ns}e"
    assert closing.create(key, b"", ephemeral=True) is not None
    cancelled = watch(closing, f"{ns}w")
    gone = watch(watcher, key)
    mark = gone.mark()
    closing.close()
    closing.close()
    gone.wait_past(mark, "the watch on a closed backend's ephemeral key")
    assert watcher.get(key) is None
    after_close = cancelled.mark()
    barrier_after_writes(watcher, watcher, f"{ns}w")
    assert cancelled.mark() == after_close, "a watch of a closed backend was called"


# -- watches ------------------------------------------------------------------------
def barrier_after_writes(observer: Backend, writer: Backend, key: str) -> None:
    """Create and delete ``key`` with ``writer``; return once every call that
    a watch of ``observer`` would get from these writes has come.

    The proof is a sync round, twice: ``writer`` creates a fresh key that no
    other watch covers, and a fresh watch of ``observer`` on it must fire. A
    backend may fire a new watch once without a change (when its listening
    connection comes up), so one round could be fooled, never two; and the
    fresh keys keep a late notice of a round from reaching the watch under
    test."""
    current = writer.get(key)
    if current is not None:
        assert writer.delete(key, current.version) is True
    assert writer.create(key, b"barrier") is not None
    created = writer.get(key)
    assert created is not None and writer.delete(key, created.version) is True
    for round_ in range(2):
        sync_key = f"{key}-sync-{uuid.uuid4().hex[:8]}/{round_}"  # under a directory of its own
        barrier = Calls()
        handle = observer.watch(sync_key, barrier)
        mark = barrier.mark()
        assert writer.create(sync_key, b"") is not None
        barrier.wait_past(mark, "the sync watch")
        handle.cancel()


@pytest.mark.parametrize("ephemeral", [False, True], ids=["persistent", "ephemeral"])
def test_watch_fires_after_create_update_and_delete(make_backend: MakeBackend, ns: str, ephemeral: bool) -> None:
    writer, watcher = make_backend(), make_backend()
    key, prefix = f"{ns}dir/k", f"{ns}dir/"  # the prefix does not exist yet
    exact, children = watch(watcher, key), watch(watcher, prefix)

    def step(action: Callable[[], object], what: str) -> None:
        marks = exact.mark(), children.mark()
        assert action()
        exact.wait_past(marks[0], f"the exact watch after {what}")
        children.wait_past(marks[1], f"the prefix watch after {what}")

    step(lambda: writer.create(key, b"1", ephemeral=ephemeral), "create")
    entry = writer.get(key)
    assert entry is not None
    step(lambda: writer.compare_and_set(key, b"2", entry.version), "update")
    step(lambda: writer.delete(key), "delete")
    mark = children.mark()
    writer.create_sequential(prefix, b"", ephemeral=ephemeral)
    children.wait_past(mark, "the prefix watch after create_sequential")
    mark = children.mark()
    writer.enqueue(prefix, b"")
    children.wait_past(mark, "the prefix watch after enqueue")
    main = threading.get_ident()
    assert main not in exact.threads and main not in children.threads  # called on a backend thread


@pytest.mark.parametrize("watched_already", [False, True], ids=["first", "watched-already"])
def test_watch_unchanged_says_whether_the_entry_changed_as_it_arms(make_backend: MakeBackend, ns: str,
                                                                   watched_already: bool) -> None:
    """True while the key holds the entry's version, False once it was
    updated or deleted; the watch then calls back on a later change, a
    waiter's wake-up (Wake.set) included. Also when another watch of the same
    object watched the key already (the watch is then not armed afresh)."""
    writer, watcher = make_backend(), make_backend()
    key = f"{ns}k"
    if watched_already:
        watch(watcher, key)
    first = writer.create(key, b"1", ephemeral=True)
    assert first is not None
    calls = Calls()
    handle, unchanged = watcher.watch_unchanged(first, calls)
    assert unchanged
    mark = calls.mark()
    updated = writer.compare_and_set(key, b"2", first.version)
    assert updated is not None
    calls.wait_past(mark, "a watch_unchanged watch after an update")
    handle.cancel()
    stale, unchanged = watcher.watch_unchanged(first, Calls())
    stale.cancel()
    assert not unchanged, "the entry was updated: it changed"
    assert writer.delete(key) is True
    gone, unchanged = watcher.watch_unchanged(updated, Calls())
    gone.cancel()
    assert not unchanged, "the entry was deleted: it changed"
    again = writer.create(key, b"3", ephemeral=True)
    assert again is not None
    woken = Wake()
    handle, unchanged = watcher.watch_unchanged(again, woken.set)
    assert unchanged
    assert writer.delete(key) is True
    assert woken.wait(BOUND), "a waiter's wake-up was not set after the deletion"
    handle.cancel()


def test_watch_on_a_prefix_covers_its_direct_children(make_backend: MakeBackend, ns: str) -> None:
    writer, watcher = make_backend(), make_backend()
    children = watch(watcher, f"{ns}a/")
    for name in ("x", "y-1", "%41"):
        mark = children.mark()
        assert writer.create(f"{ns}a/{name}", b"", ephemeral=True) is not None
        children.wait_past(mark, f"the prefix watch after creating child {name}")


def test_watches_of_one_object_fire_on_its_own_writes(make_backend: MakeBackend, ns: str) -> None:
    backend = make_backend()
    exact, children = watch(backend, f"{ns}k"), watch(backend, ns)
    marks = exact.mark(), children.mark()
    assert backend.create(f"{ns}k", b"") is not None
    exact.wait_past(marks[0], "an exact watch after a write by the same backend object")
    children.wait_past(marks[1], "a prefix watch after a write by the same backend object")


def test_cancel_stops_the_callbacks(make_backend: MakeBackend, ns: str) -> None:
    writer, watcher = make_backend(), make_backend()
    key = f"{ns}k"
    for watched in (key, ns):
        calls = Calls()
        handle = watcher.watch(watched, calls)
        handle.cancel()
        handle.cancel()  # idempotent
        barrier_after_writes(watcher, writer, key)
        assert calls.mark() == 0, f"a cancelled watch on {watched!r} was called {calls.mark()} times"
    still = watch(watcher, key)  # other watches on the same key live on
    mark = still.mark()
    assert writer.create(key, b"") is not None
    still.wait_past(mark, "a watch registered after another was cancelled")


# -- values -------------------------------------------------------------------------
def test_values_round_trip_byte_exact_up_to_the_maximum(make_backend: MakeBackend, ns: str) -> None:
    writer, reader = make_backend(), make_backend()
    largest = bytes(range(256)) * (MAX_VALUE_BYTES // 256) + b"\x00" * (MAX_VALUE_BYTES % 256)
    values = [b"", b"\x00", b"\x00\xff\r\n\x00", largest, os.urandom(MAX_VALUE_BYTES)]
    assert len(largest) == MAX_VALUE_BYTES
    for i, value in enumerate(values):
        for ephemeral in (False, True):
            key = f"{ns}v{i}/{ephemeral}"
            made = writer.create(key, value, ephemeral=ephemeral)
            assert made is not None and made.value == value
            got = reader.get(key)
            assert got is not None and got.value == value
            updated = reader.compare_and_set(key, value[::-1], got.version)
            assert updated is not None and updated.value == value[::-1]
            got = writer.get(key)
            assert got is not None and got.value == value[::-1]
            queued = writer.create_sequential(f"{ns}q{i}/", value, ephemeral=ephemeral)
            assert queued.value == value
        entry, queue = writer.enqueue(f"{ns}e{i}/", value)
        assert entry.value == value and [e.value for e in queue] == [value]
        assert [e.value for e in reader.list(f"{ns}q{i}/")] == [value, value]
        assert [e.value for e in reader.list(f"{ns}v{i}/")] == [value[::-1], value[::-1]]


# -- fork ---------------------------------------------------------------------------
def test_forget_after_fork_leaves_the_parents_session_and_keys(make_backend: MakeBackend, ns: str) -> None:
    parent, other = make_backend(), make_backend()
    session = session_of(parent, ns)
    member = parent.create(f"{ns}g/m", b"", ephemeral=True)
    queued, _ = parent.enqueue(f"{ns}q/", b"")
    assert member is not None
    watching = watch(parent, f"{ns}w")

    assert in_forked_child(parent.forget_after_fork) == "ok"

    assert same(other.get(member.key), member) and same(other.get(queued.key), queued)
    assert other.session_last_seen(session) is not None
    parent.refresh_session()
    assert same(other.get(member.key), member)
    assert session_of(parent, ns) == session
    mark = watching.mark()
    assert other.create(f"{ns}w", b"") is not None
    watching.wait_past(mark, "the parent's watch after the child forgot its backend")
    more, queue = parent.enqueue(f"{ns}q/", b"")
    assert [e.key for e in queue] == sorted([queued.key, more.key])
    parent.close_session()
    assert other.get(member.key) is None


# -- deadlines ----------------------------------------------------------------------
@pytest.fixture
def proxied(url: str) -> Iterator[tuple[str, list[Proxy]]]:
    """The URL of the backend under test through one proxy per host, and the proxies."""
    scheme, rest = url.split("://", 1)
    hosts, sep, tail = rest.partition("/")
    proxies: list[Proxy] = []
    shown = []
    for hostport in hosts.split(","):
        auth, at, address = hostport.rpartition("@")
        host, _, port = address.rpartition(":")
        proxy = Proxy(int(port), host or "127.0.0.1")
        proxies.append(proxy)
        shown.append(f"{auth}{at}127.0.0.1:{proxy.port}")
    yield f"{scheme}://{','.join(shown)}{sep}{tail}", proxies
    for proxy in proxies:
        proxy.close()


def stated_elapsed(error: BaseException) -> float:
    found = re.findall(r"(?:after|within) (\d+(?:\.\d+)?)\s?s", str(error))
    assert found, f"the message does not state the time spent: {error}"
    return float(found[-1])


@pytest.mark.network
def test_every_primitive_keeps_the_callers_deadline_when_the_engine_stops_answering(
        make_backend: MakeBackend, proxied: tuple[str, list[Proxy]], ns: str) -> None:
    through, proxies = proxied
    backend = make_backend(url=through, ttl=30.0)
    victim = session_of(make_backend(), ns)
    session = session_of(backend, ns)
    entry = backend.create(f"{ns}k", b"1")
    assert entry is not None
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: backend.get(f"{ns}k"),
        "create": lambda: backend.create(f"{ns}n", b""),
        "create ephemeral": lambda: backend.create(f"{ns}e", b"", ephemeral=True),
        "compare_and_set": lambda: backend.compare_and_set(f"{ns}k", b"2", entry.version),
        "delete": lambda: backend.delete(f"{ns}k"),
        "list": lambda: backend.list(ns),
        "create_sequential": lambda: backend.create_sequential(f"{ns}q/", b""),
        "enqueue": lambda: backend.enqueue(f"{ns}q/", b""),
        "refresh_session": backend.refresh_session,
        "session_last_seen": lambda: backend.session_last_seen(session),
        "expire_session": lambda: backend.expire_session(victim),
        "ping": backend.ping,
        "watch": lambda: backend.watch(f"{ns}w", lambda: None),
    }
    late: list[str] = []
    for proxy in proxies:
        proxy.partition()
    try:
        for name, call in calls.items():
            started = time.monotonic()
            try:
                with bounded(started + DEADLINE):
                    call()
            except ConnectionLost as exc:
                elapsed = time.monotonic() - started
                if abs(stated_elapsed(exc) - elapsed) >= SLACK:
                    late.append(f"{name}: says {exc} after {elapsed:.2f}s")
            else:
                elapsed = time.monotonic() - started
            if elapsed >= DEADLINE + SLACK:
                late.append(f"{name}: {elapsed:.2f}s")
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as caught, bounded(started + DEADLINE):
            make_backend(url=through, ttl=None)
        elapsed = time.monotonic() - started
        if elapsed >= DEADLINE + SLACK:
            late.append(f"connect: {elapsed:.2f}s")
        assert abs(stated_elapsed(caught.value) - elapsed) < SLACK
    finally:
        for proxy in proxies:
            proxy.heal()
    assert not late, f"past the deadline of {DEADLINE}s: {late}"
