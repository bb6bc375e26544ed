"""Reading directories with their owners' liveness, and changing them under
CAS: the two things every primitive is made of.

A read is one pipeline: the directory items, plus the session items of the
owners the cache last saw there (a second round trip only for owners it did
not expect). An entry whose owner session is gone is absent; the reader
removes it with a compare-and-set of the directory (one try: a conflict
means someone else rewrote it meanwhile). Session ids found gone are
remembered (a session never comes back), so later writes drop their
entries without asking.

A change (:meth:`Store.transact`) is planned on the directory as last seen
(the cache, or a fresh read), and sent as one pipeline: the session checks
its outcome depends on, the spilled values it writes, then the directory
item with the CAS value it was planned on. A conflict re-reads and plans
again, until the caller's deadline. This process's writers of a directory
take turns, and one write carries the changes queued (:mod:`.turns`). An outcome that writes nothing (a key
that exists, a version that does not match) is only ever decided on a
fresh read, never on the cache.

memcached counts CAS values from 1 again after a restart, so a CAS value
read before a restart may name another write after it. Every directory
remembers the server run its CAS value came from, and a write compared
with it is sent only on a connection to that same run (a connection never
outlives its server): otherwise the change is planned again on a fresh read.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from moot import realthreads
from moot.backends.memcached import turns
from moot.backends.memcached.dirs import (
    Directory,
    decode,
    decode_names,
    mkey,
    name_line,
    names_key,
    parent,
    spill_key,
)
from moot.backends.memcached.meta import Replies, Reply, md, mg, ms
from moot.backends.memcached.pool import ServerChanged
from moot.errors import BackendError, CoordinatorClosed
from moot.realthreads import threading


class Runner(Protocol):
    """Sends commands (one pipeline) and returns their replies, bounded by
    ``until``; raises ConnectionLost or BackendError (an error reply) itself.
    With ``server``, sends only to that server run, else raises ServerChanged."""

    def __call__(self, commands: Sequence[bytes], until: float, server: str | None = None) -> Replies: ...

_CACHED_DIRS = 1024
_DEAD_SESSIONS = 8192
_CONFLICT = (b"EX", b"NS", b"NF")  # someone else wrote, created or removed the item first
#: After the n-th lost CAS race in a row, wait a random time below min(2**n x base, cap) before
#: trying again: a herd of writers on one directory (a thousand members joining at once) then
#: spreads out instead of livelocking until their deadlines run out.
_BACKOFF_BASE, _BACKOFF_CAP = 0.0002, 0.02


@dataclasses.dataclass
class Plan:
    """What one attempt of a change does: write ``new`` (None: nothing),
    with ``check`` the sessions its outcome depends on; ``result`` is the
    caller's. With ``again_if_dead``, an attempt that writes nothing is
    planned again when one of ``check`` turns out to be gone."""

    new: Directory | None
    check: list[str] = dataclasses.field(default_factory=list)
    result: Any = None
    again_if_dead: bool = False


def session_key(session_id: str) -> bytes:
    return mkey(b"s", session_id)


@functools.lru_cache(maxsize=_DEAD_SESSIONS)
def alive_probe(session_id: str) -> bytes:
    """The command that asks whether the session is alive (remembered: a
    listing asks it of every owner, every time)."""
    return mg(session_key(session_id))


class Store:
    """Directories and liveness over one runner (the pool's); the watch
    poller passes its own runner to the same reads."""

    def __init__(self, run: Runner, committed: Callable[[Directory], None], server: str = ""):
        self._run = run
        self._server = server  # the server's address: this process's writers of a directory queue by it
        self._committed = committed
        self._lock = threading.Lock()  # real; held for no I/O
        self._cache: collections.OrderedDict[str, Directory] = collections.OrderedDict()
        self._dead: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._pages: dict[str, int] = {}  # directory -> the last page of its names seen (0 if absent)

    # -- what is known ------------------------------------------------------
    def is_dead(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._dead

    def not_dead(self, session_ids: Iterable[str]) -> list[str]:
        """``session_ids`` less those known to be gone (one lookup under one lock)."""
        with self._lock:
            return [s for s in session_ids if s not in self._dead]

    def mark_dead(self, session_ids: Iterable[str]) -> None:
        with self._lock:
            for session_id in session_ids:
                self._dead[session_id] = None
                self._dead.move_to_end(session_id)
            while len(self._dead) > _DEAD_SESSIONS:
                self._dead.popitem(last=False)

    def _remember(self, directory: Directory) -> None:
        with self._lock:
            self._cache[directory.path] = directory
            self._cache.move_to_end(directory.path)
            while len(self._cache) > _CACHED_DIRS:
                self._cache.popitem(last=False)

    def cached(self, path: str) -> Directory | None:
        with self._lock:
            return self._cache.get(path)

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def without_dead(self, directory: Directory) -> Directory:
        """``directory`` without the entries of sessions known to be gone."""
        with self._lock:
            dead = [leaf for leaf, r in directory.entries.items() if r.owner is not None and r.owner in self._dead]
        if not dead:
            return directory
        kept = directory.copy()
        for leaf in dead:
            del kept.entries[leaf]
        return kept

    # -- reads --------------------------------------------------------------
    def check_sessions(self, sessions: Sequence[str], until: float, run: Runner | None = None) -> dict[str, bool]:
        """Whether each session is alive now (one round trip; none if empty)."""
        if not sessions:
            return {}
        replies = (run or self._run)([alive_probe(s) for s in sessions], until)
        return self._alive(sessions, replies)

    def _alive(self, sessions: Sequence[str], replies: Sequence[Reply]) -> dict[str, bool]:
        alive = {s: r.code == b"HD" for s, r in zip(sessions, replies, strict=True)}
        self.mark_dead(s for s, up in alive.items() if not up)
        return alive

    def read(self, paths: Sequence[str], until: float, run: Runner | None = None,
             names: dict[str, frozenset[str]] | None = None) -> dict[str, Directory]:
        """The live entries of each directory (dead ones removed, best effort),
        their spilled values not loaded: one round trip, two when the owners
        there are not those the cache expected, plus one to remove dead ones.
        With ``names``, also fills it with each directory's subdirectories
        (its names item, and the names an item of the older layout holds),
        read in the same pipeline."""
        run = run or self._run
        guessed = sorted(self.not_dead({o for p in paths if (c := self.cached(p)) for o in c.owners()}))
        pages = {p: self._last_page(p) + 2 for p in paths} if names is not None else {}  # and the one after
        listing = [mg(names_key(p, page), b"v") for p, count in pages.items() for page in range(count)]
        replies = run([mg(mkey(b"d", p), b"v c") for p in paths] + listing + [alive_probe(s) for s in guessed],
                      until)
        alive = self._alive(guessed, replies[len(paths) + len(listing):])
        found = {}
        for path, reply in zip(paths, replies, strict=False):
            found[path] = self._directory(path, reply, replies.server)
        if names is not None:
            at = len(paths)
            for path in paths:
                names[path] = found[path].subdirs | self._names(path, replies[at:at + pages[path]], until, run)
                at += pages[path]
        unknown = sorted({o for d in found.values() for o in d.owners()} - set(alive))
        alive.update(self.check_sessions(self.not_dead(unknown), until, run))
        live = {path: self.without_dead(d) for path, d in found.items()}
        self.purge([d for path, d in found.items() if live[path] is not d], until, run)
        return live

    def _directory(self, path: str, reply: Reply, server: str) -> Directory:
        """The directory ``path`` in ``reply`` (an ``mg`` with ``v c``) from
        server run ``server``, remembered. Not decoded again when it is the
        one remembered: a CAS value names one version of an item within a
        server run (a listing of an unchanged group of a thousand members
        skips a thousand entries' parsing)."""
        if reply.code == b"EN":
            directory = Directory(path)
        else:
            known = self.cached(path)
            value = _value(reply)
            if known is not None and known.cas == reply.cas and known.server == server and server:
                self._remember(known)
                return known
            directory = decode(path, value, reply.cas)
        directory.server = server
        self._remember(directory)
        return directory

    def purge(self, directories: Sequence[Directory], until: float, run: Runner | None = None) -> None:
        """Remove the entries of dead sessions from ``directories``: one try
        each, in one round trip (a conflict: someone rewrote it, and will again)."""
        if not directories:
            return
        cleaned = [self.without_dead(d) for d in directories]
        servers = {d.server for d in cleaned}
        if len(servers) != 1:
            return  # read in different server runs: the next reader purges
        try:
            replies = (run or self._run)([ms(mkey(b"d", d.path), d.encode(), b"c C%d" % d.cas) for d in cleaned],
                                         until, servers.pop())
        except ServerChanged:
            return
        garbage = []
        for old, new, reply in zip(directories, cleaned, replies, strict=True):
            if reply.code == b"HD":
                new.cas, new.server = reply.cas, replies.server
                self._remember(new)
                self._committed(new)
                garbage += _replaced_spills(old, new)
        self.drop_spills(garbage, until, run)

    def probe(self, paths: Sequence[str], sessions: Sequence[str], until: float,
              run: Runner) -> tuple[dict[str, tuple[str, int]], dict[str, bool]]:
        """The server run and CAS value of each directory item (0: absent)
        and whether each session is alive: one round trip, no values sent."""
        replies = run([mg(mkey(b"d", p), b"c") for p in paths] + [alive_probe(s) for s in sessions], until)
        cas = {p: (replies.server, 0 if r.code == b"EN" else r.cas) for p, r in zip(paths, replies, strict=False)}
        return cas, self._alive(sessions, replies[len(paths):])

    def load(self, directories: Iterable[Directory], until: float) -> dict[tuple[str, str], bytes] | None:
        """The spilled values of the directories' entries, by (path, leaf);
        None if one was already replaced (read again)."""
        wanted = [(d.path, leaf, r.version) for d in directories for leaf, r in d.entries.items() if r.spilled]
        if not wanted:
            return {}
        replies = self._run([mg(spill_key(path, version), b"v") for path, _, version in wanted], until)
        if any(r.code != b"VA" for r in replies):
            return None
        return {(path, leaf): _value(r) for (path, leaf, _), r in zip(wanted, replies, strict=True)}

    def drop_spills(self, keys: Sequence[bytes], until: float, run: Runner | None = None) -> None:
        if keys:
            (run or self._run)([md(k) for k in keys], until)

    # -- changes ------------------------------------------------------------
    def transact(self, path: str, plan: Callable[[Directory], Plan], until: float) -> tuple[Plan, dict[str, bool]]:
        """Apply ``plan`` to directory ``path`` under its CAS value (see the
        module docstring); returns the plan committed (or the one that wrote
        nothing) and the liveness of its ``check`` sessions.

        The writer whose turn it is carries the changes of this process's
        writers queued behind it (:func:`turns.lead`): their plans
        run one after the other, each on the directory as the one before
        left it, and one compare-and-set writes them all. Each outcome is
        then decided on the state that write replaced, as if written alone
        in that order; a lost race plans them all again."""
        key = (self._server, path)
        me = turns.Writer(plan, until, self)
        gate = turns.line_up(key, me)
        if gate is None:
            return me.outcome()
        carried: list[turns.Writer] = []
        try:
            carried = turns.lead(gate, me)
            self._transact(path, [me, *carried], until, gate)
        except BaseException as exc:
            for writer in carried:
                if writer.done is None and writer.error is None:
                    writer.error = _for_follower(exc)
            raise
        finally:
            turns.pass_on(key, gate, carried)
        return me.outcome()

    def _transact(self, path: str, batch: list[turns.Writer], until: float, gate: turns.Gate) -> None:
        """Give every writer of ``batch`` its outcome (or error)."""
        state = _newer(self.cached(path), gate.latest)
        fresh = False
        conflicts = 0
        pending = batch
        while pending:
            if state is None:
                state, fresh = self._read_raw(path, until), True
                gate.latest = state
            stored, state = state, self.without_dead(state)
            attempts: list[tuple[turns.Writer, Plan]] = []
            new = state
            for writer in pending:
                try:
                    attempt = writer.plan(new)
                except Exception as exc:  # that caller's alone: the others' changes go on
                    writer.error = exc
                    continue
                attempts.append((writer, attempt))
                new = new if attempt.new is None else attempt.new
            if not attempts:
                return
            pending = [writer for writer, _ in attempts]
            writes = new is not state
            if not writes and not fresh:  # nothing written is only ever decided on a fresh read
                state = None
                continue
            check = list(dict.fromkeys(s for _, attempt in attempts for s in attempt.check))
            commands = [alive_probe(s) for s in check]
            spills: list[bytes] = []
            if writes:
                if new.cas == 0 and path:
                    self.register(path, until)
                spill_writes = []
                for leaf, r in new.entries.items():
                    if r.spilled and state.entries.get(leaf) is not r:
                        assert r.value is not None
                        spills.append(spill_key(path, r.version))
                        spill_writes.append(ms(spills[-1], r.value, b"MS"))
                if spill_writes:  # stored before the directory names them (an error raises before it does)
                    self._run(spill_writes, until)
                mode = b"c ME" if new.cas == 0 else b"c C%d" % new.cas
                commands.append(ms(mkey(b"d", path), new.encode(), mode))
            try:
                replies = self._run(commands, until, None if not writes or new.cas == 0 else new.server)
            except ServerChanged:  # planned on a read from before a restart
                self.drop_spills(spills, until)
                state, fresh = None, False
                continue
            alive = self._alive(check, replies[:len(check)])
            if writes:
                reply = replies[-1]
                if reply.code in _CONFLICT:
                    self.drop_spills(spills, until)
                    state, fresh = None, False
                    conflicts += 1
                    pause = random.uniform(0, min(_BACKOFF_BASE * 2 ** min(conflicts, 16), _BACKOFF_CAP))
                    realthreads.pause(max(0.0, min(pause, until - time.monotonic())))
                    continue
                if reply.code != b"HD":
                    raise BackendError(f"memcached answered {reply.code.decode(errors='replace')} "
                                       "to a directory write")
                new.cas, new.server = reply.cas, replies.server
                gate.latest = new
                for store in dict.fromkeys(writer.store for writer, _ in attempts):  # each caller's backend
                    store._remember(new)
                    store._committed(new)
                self.drop_spills(_replaced_spills(stored, new), until)
                state, fresh = new, False
            pending = []
            for writer, attempt in attempts:
                mine = {s: alive[s] for s in attempt.check}
                if attempt.new is None and attempt.again_if_dead and not all(mine.values()):
                    pending.append(writer)  # planned again without the entries of the gone
                else:
                    writer.done = attempt, mine

    def _read_raw(self, path: str, until: float) -> Directory:
        replies = self._run([mg(mkey(b"d", path), b"v c")], until)
        return self._directory(path, replies[0], replies.server)

    def _last_page(self, directory: str) -> int:
        """The last page of ``directory``'s names this object has seen (0 if none)."""
        with self._lock:
            return self._pages.get(directory, 0)

    def _saw_page(self, directory: str, page: int) -> None:
        with self._lock:
            if page > self._pages.get(directory, 0):
                if len(self._pages) >= _CACHED_DIRS:
                    self._pages.clear()
                self._pages[directory] = page

    def _names(self, directory: str, replies: Sequence[Reply], until: float, run: Runner) -> frozenset[str]:
        """The names in the pages of ``directory`` that ``replies`` read
        (pages 0, 1, ...), reading the pages after them until one is missing:
        pages are added in order and never removed."""
        found: set[str] = set()
        page = 0
        while True:
            for reply in replies:
                if reply.code == b"EN":
                    return frozenset(found)
                found |= decode_names(directory, _value(reply), page)
                self._saw_page(directory, page)
                page += 1
            replies = run([mg(names_key(directory, page), b"v")], until)

    def register(self, path: str, until: float) -> None:
        """Name directory ``path`` in its parent, before ``path``'s item is
        created, so that a directory item that exists is always reachable from
        the root: one append of the name to the last page of the parent's
        names (a few bytes, however many names it holds; no CAS: appends
        never lose one another). A parent without names yet is first named
        in its own parent (and so on up), then its first page is added. A
        page memcached will not make larger (its item size limit: some
        25,000 names) is full: the name goes to the next page."""
        above, name = parent(path)
        page = self._last_page(above)
        while True:
            key, line = names_key(above, page), name_line(above, name, page)
            appended, there = self._run([ms(key, line, b"MA"), mg(key)], until)
            if appended.code == b"HD":
                self._saw_page(above, page)
                return
            if appended.code != b"NS":
                raise BackendError(f"memcached answered {appended.code.decode(errors='replace')} to an append")
            if there.code == b"HD":  # not stored, yet there: full
                self._saw_page(above, page)
                page += 1
                continue
            if above and page == 0:
                self.register(above, until)
            (added,) = self._run([ms(key, line, b"ME")], until)
            if added.code == b"HD":
                self._saw_page(above, page)
                return
            if added.code != b"NS":  # NS: another writer added it meanwhile: append to it
                raise BackendError(f"memcached answered {added.code.decode(errors='replace')} to an add")


def _for_follower(error: BaseException) -> BaseException:
    """What a writer whose change a failed write carried raises: a copy of
    the error (its own traceback), or, if the carrying writer stopped (an
    interrupted call, its own backend closed: not an error of the write), a
    TimeoutError (ConnectionLost to the caller): the change may have been
    written."""
    if not isinstance(error, Exception) or isinstance(error, CoordinatorClosed):  # the carrier's, not the write's
        return TimeoutError("the writer that carried this change stopped (its call was interrupted, or its "
                            "backend closed); the change may have been written")
    try:
        return copy.copy(error)
    except Exception:
        return error


def _newer(mine: Directory | None, shared: Directory | None) -> Directory | None:
    """The later of two states of a directory (a later write has a greater
    CAS value within one server run; across runs, the shared one: a write
    planned on a state of the wrong run is refused before it is sent)."""
    if mine is None or (shared is not None and (shared.server != mine.server or shared.cas > mine.cas)):
        return shared
    return mine


def _value(reply: Reply) -> bytes:
    if reply.code != b"VA" or reply.value is None:
        raise BackendError(f"memcached answered {reply.code.decode(errors='replace')} to a read")
    return reply.value


def _replaced_spills(old: Directory, new: Directory) -> list[bytes]:
    """The spilled-value items of ``old`` that ``new`` no longer names."""
    return [spill_key(old.path, r.version) for leaf, r in old.entries.items()
            if r.spilled and (leaf not in new.entries or new.entries[leaf].version != r.version)]
