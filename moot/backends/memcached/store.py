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
again, until the caller's deadline. An outcome that writes nothing (a key
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
import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from moot import realthreads
from moot.backends.memcached.dirs import Directory, decode, mkey, parent, spill_key
from moot.backends.memcached.meta import Replies, Reply, md, mg, ms
from moot.backends.memcached.pool import ServerChanged
from moot.errors import BackendError
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


class Store:
    """Directories and liveness over one runner (the pool's); the watch
    poller passes its own runner to the same reads."""

    def __init__(self, run: Runner, committed: Callable[[Directory], None]):
        self._run = run
        self._committed = committed
        self._lock = threading.Lock()  # real; held for no I/O
        self._cache: collections.OrderedDict[str, Directory] = collections.OrderedDict()
        self._dead: collections.OrderedDict[str, None] = collections.OrderedDict()

    # -- what is known ------------------------------------------------------
    def is_dead(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._dead

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
        replies = (run or self._run)([mg(session_key(s)) for s in sessions], until)
        return self._alive(sessions, replies)

    def _alive(self, sessions: Sequence[str], replies: Sequence[Reply]) -> dict[str, bool]:
        alive = {s: r.code == b"HD" for s, r in zip(sessions, replies, strict=True)}
        self.mark_dead(s for s, up in alive.items() if not up)
        return alive

    def read(self, paths: Sequence[str], until: float, run: Runner | None = None) -> dict[str, Directory]:
        """The live entries of each directory (dead ones removed, best effort),
        their spilled values not loaded: one round trip, two when the owners
        there are not those the cache expected, plus one to remove dead ones."""
        run = run or self._run
        guessed = sorted({o for p in paths if (c := self.cached(p)) for o in c.owners() if not self.is_dead(o)})
        replies = run([mg(mkey(b"d", p), b"v c") for p in paths] + [mg(session_key(s)) for s in guessed], until)
        alive = self._alive(guessed, replies[len(paths):])
        found = {}
        for path, reply in zip(paths, replies, strict=False):
            directory = Directory(path) if reply.code == b"EN" else decode(path, _value(reply), reply.cas)
            directory.server = replies.server
            self._remember(directory)
            found[path] = directory
        unknown = sorted({o for d in found.values() for o in d.owners()} - set(alive))
        alive.update(self.check_sessions([o for o in unknown if not self.is_dead(o)], until, run))
        self.purge([d for d in found.values() if self.without_dead(d) is not d], until, run)
        return {path: self.without_dead(d) for path, d in found.items()}

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
        replies = run([mg(mkey(b"d", p), b"c") for p in paths] + [mg(session_key(s)) for s in sessions], until)
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
        nothing) and the liveness of its ``check`` sessions."""
        state = self.cached(path)
        fresh = False
        conflicts = 0
        while True:
            if state is None:
                state, fresh = self._read_raw(path, until), True
            stored, state = state, self.without_dead(state)
            attempt = plan(state)
            if attempt.new is None and not fresh:
                state = None
                continue
            commands = [mg(session_key(s)) for s in attempt.check]
            spills: list[bytes] = []
            if attempt.new is not None:
                if attempt.new.cas == 0 and path:
                    self.register(path, until)
                writes = []
                for leaf, r in attempt.new.entries.items():
                    if r.spilled and state.entries.get(leaf) is not r:
                        assert r.value is not None
                        spills.append(spill_key(path, r.version))
                        writes.append(ms(spills[-1], r.value, b"MS"))
                if writes:  # stored before the directory names them (an error raises before it does)
                    self._run(writes, until)
                mode = b"c ME" if attempt.new.cas == 0 else b"c C%d" % attempt.new.cas
                commands.append(ms(mkey(b"d", path), attempt.new.encode(), mode))
            try:
                replies = self._run(commands, until, None if attempt.new is None or attempt.new.cas == 0
                                    else attempt.new.server)
            except ServerChanged:  # planned on a read from before a restart
                self.drop_spills(spills, until)
                state, fresh = None, False
                continue
            alive = self._alive(attempt.check, replies[:len(attempt.check)])
            if attempt.new is None:
                if attempt.again_if_dead and not all(alive.values()):
                    continue
                return attempt, alive
            reply = replies[-1]
            if reply.code == b"HD":
                attempt.new.cas, attempt.new.server = reply.cas, replies.server
                self._remember(attempt.new)
                self._committed(attempt.new)
                self.drop_spills(_replaced_spills(stored, attempt.new), until)
                return attempt, alive
            if reply.code not in _CONFLICT:
                raise BackendError(f"memcached answered {reply.code.decode(errors='replace')} to a directory write")
            self.drop_spills(spills, until)
            state, fresh = None, False
            conflicts += 1
            pause = random.uniform(0, min(_BACKOFF_BASE * 2 ** min(conflicts, 16), _BACKOFF_CAP))
            realthreads.pause(max(0.0, min(pause, until - time.monotonic())))

    def _read_raw(self, path: str, until: float) -> Directory:
        replies = self._run([mg(mkey(b"d", path), b"v c")], until)
        (reply,) = replies
        directory = Directory(path) if reply.code == b"EN" else decode(path, _value(reply), reply.cas)
        directory.server = replies.server
        self._remember(directory)
        return directory

    def register(self, path: str, until: float) -> None:
        """List directory ``path`` in its parent (and the parent in its own,
        as needed), before ``path``'s item is created: a directory item that
        exists is always reachable from the root."""
        above, name = parent(path)

        def add(state: Directory) -> Plan:
            if name in state.subdirs:
                return Plan(None)
            new = state.copy()
            new.subdirs = state.subdirs | {name}
            return Plan(new)

        self.transact(above, add, until)


def _value(reply: Reply) -> bytes:
    if reply.code != b"VA" or reply.value is None:
        raise BackendError(f"memcached answered {reply.code.decode(errors='replace')} to a read")
    return reply.value


def _replaced_spills(old: Directory, new: Directory) -> list[bytes]:
    """The spilled-value items of ``old`` that ``new`` no longer names."""
    return [spill_key(old.path, r.version) for leaf, r in old.entries.items()
            if r.spilled and (leaf not in new.entries or new.entries[leaf].version != r.version)]
