"""MemcachedBackend: the primitives over one memcached server (meta protocol)."""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from moot import realthreads
from moot.backends._support import fork
from moot.backends._support.lost import connection_lost
from moot.backends._support.tls import option_names, tls_context
from moot.backends.base import Backend, Dispatcher, Entry, Watch
from moot.backends.memcached.dirs import Directory, check_prefix, record, split_key
from moot.backends.memcached.meta import MetaError, Replies, md, mg, ms
from moot.backends.memcached.poller import Poller
from moot.backends.memcached.pool import LoginRefused, Pool, dial
from moot.backends.memcached.store import Plan, Store, session_key
from moot.backends.memcached.turns import InLine
from moot.deadline import bounded, remaining
from moot.errors import (
    AuthenticationFailed,
    BackendError,
    ConnectionLost,
    CoordinatorClosed,
    InvalidArgument,
    InvalidURL,
    SessionExpired,
)
from moot.url import BackendURL, option_float

log = logging.getLogger("moot.backends.memcached")

#: memcached reads an expiry above 30 days as a Unix time, not a number of seconds.
_MAX_EXPIRY = 30 * 24 * 3600
#: Seconds added to a session item's expiry: memcached's clock ticks once a
#: second, so an item may expire up to two seconds before its expiry has passed.
_CLOCK_MARGIN = 2
_SESSION_ID = re.compile(r"[0-9a-f]{32}")
_REAL_SOCKET = realthreads.original("socket")


def _expiry(ttl: float) -> tuple[int, float]:
    """(expiry sent to memcached, granted TTL) for a session TTL."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise InvalidArgument(f"ttl={ttl!r}: a session TTL must be a positive, finite number of seconds")
    expiry = min(math.ceil(ttl) + _CLOCK_MARGIN, _MAX_EXPIRY)
    return expiry, float(min(ttl, expiry - _CLOCK_MARGIN))


class MemcachedBackend(Backend):
    """Primitives over one memcached server; see the package docstring."""

    OPTIONS = frozenset({"socket_timeout", "max_connections", "poll_interval"}) | option_names({})

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        if len(url.hosts) > 1:
            raise InvalidURL(f"{url.redacted()}: memcached:// takes one host:port (moot needs one server, "
                             "not a sharded pool)")
        if url.path.strip("/"):
            raise InvalidURL(f"{url.redacted()}: memcached:// takes no path")
        self._host, self._port = url.host_port(11211)
        self._socket_timeout = option_float(options, "socket_timeout", 5.0, maximum=3600)
        self._max_connections = int(option_float(options, "max_connections", 50, minimum=1, allow_equal=True,
                                                 maximum=10_000))
        self._poll_interval = option_float(options, "poll_interval", 0.025, minimum=0.001, allow_equal=True,
                                           maximum=60)
        self._tls = tls_context(options, default=False, aliases={}, where=url.redacted())
        self._connect_timeout = self._socket_timeout
        self._session: tuple[str, int] | None = None  # id, expiry sent to memcached
        self._closed = self._forked = self._connected = False
        self._pool: Pool | None = None
        self._poll_pool: Pool | None = None
        self._poller: Poller | None = None
        self._dispatcher: Dispatcher | None = None
        self._store = Store(self._run, self._committed, f"{self._host}:{self._port}")
        self._version = "?"

    def __repr__(self) -> str:
        return f"<MemcachedBackend {self.url.redacted()}>"

    # -- lifecycle --------------------------------------------------------
    def connect(self, timeout: float) -> None:
        if self._forked:  # inherited across fork() and forgotten: start afresh
            self._forked = self._closed = False
        self._check_open()
        started = time.monotonic()
        self._connect_timeout = timeout
        with bounded(started + timeout), self._translated(started):
            until = started + remaining(timeout)
            self._pool = Pool(lambda until: self._dial(until, socket), self._max_connections)
            try:
                (version,), _ = self._pool.run(b"version\r\n", 1, until)
            except MetaError as exc:
                if _unauthenticated(exc):
                    raise self._login_refused("it asks for a login (it runs with -Y)") from None
                raise
            (meta,), _ = self._pool.run(b"mn\r\n", 1, until)
            if isinstance(meta, MetaError) or isinstance(version, MetaError) or meta.code != b"MN":
                raise BackendError(f"memcached at {self.url.redacted()} does not speak the meta protocol: "
                                   "moot needs memcached 1.6 or newer")
            self._version = b" ".join(version.flags).decode(errors="replace")
            self._store.forget()
            self._dispatcher = Dispatcher("moot-memcached-watch")
            self._poll_pool = Pool(lambda until: self._dial(until, _REAL_SOCKET), 1)
            self._poller = Poller(self._store, self._poll_run, self._dispatcher, self._own_session,
                                  self._own_session_gone, self._poll_interval, self._socket_timeout)
            self._connected = True
            fork.track(self)

    def close(self) -> None:
        if self._closed:
            return
        if self._connected:
            try:
                self.close_session()
            except Exception:
                log.debug("closing the memcached session failed", exc_info=True)
        self._closed = True
        fork.untrack(self)
        if self._poller is not None:
            self._poller.close()
        if self._dispatcher is not None:
            self._dispatcher.close()
        for pool in (self._pool, self._poll_pool):
            if pool is not None:
                pool.close()

    def forget_after_fork(self) -> None:
        """Drop, without any I/O, every connection and the session inherited
        from the parent: the inherited sockets get a plain close() and nothing else."""
        self._forked = self._closed = True
        self._connected = False
        self._session = None
        self.granted_ttl = None
        fork.untrack(self)
        for pool in (self._pool, self._poll_pool):
            if pool is not None:
                pool.forget()
        if self._poller is not None:
            self._poller.forget()
        self._pool = self._poll_pool = self._poller = self._dispatcher = None  # the dispatcher thread is the parent's

    def ping(self) -> str:
        (reply,) = self._run([b"version\r\n"], self._until())
        return f"memcached {' '.join(f.decode(errors='replace') for f in reply.flags)} at {self._host}:{self._port}"

    # -- connections ------------------------------------------------------
    def _dial(self, until: float, module: object) -> tuple[socket.socket, str]:
        return dial(module, (self._host, self._port), self._tls, self.url.username, self.url.password,
                    min(until, time.monotonic() + self._connect_timeout), self.url.redacted())

    def _check_open(self) -> None:
        if self._forked:
            raise CoordinatorClosed("this memcached backend was inherited across fork(); its connections stay "
                                    "the parent's: connect again in the child (moot.connect)")
        if self._closed:
            raise CoordinatorClosed("this memcached backend is closed")

    def _until(self) -> float:
        return time.monotonic() + remaining(self._socket_timeout)

    def _lost(self, exc: BaseException, started: float) -> ConnectionLost:
        """The ConnectionLost for ``exc``, stating the time really spent."""
        return connection_lost(f"memcached at {self.url.redacted()}", exc, started,
                               f"was not written in time ({exc})" if isinstance(exc, InLine) else None)

    @contextlib.contextmanager
    def _translated(self, started: float) -> Iterator[None]:
        """Raise only moot errors out of the block."""
        try:
            yield
        except LoginRefused as exc:
            raise self._login_refused(str(exc)) from None
        except MetaError as exc:
            if _unauthenticated(exc):
                raise self._login_refused(str(exc)) from None
            raise BackendError(f"memcached at {self.url.redacted()} answered: {exc}") from None
        except OSError as exc:
            raise self._lost(exc, started) from None

    def _run(self, commands: Sequence[bytes], until: float, server: str | None = None) -> Replies:
        return self._run_on(self._pool, commands, until, server)

    def _poll_run(self, commands: Sequence[bytes], until: float, server: str | None = None) -> Replies:
        return self._run_on(self._poll_pool, commands, until, server)

    def _run_on(self, pool: Pool | None, commands: Sequence[bytes], until: float, server: str | None) -> Replies:
        """The replies to ``commands``, sent as one pipeline within ``until``
        (with ``server``: only to that server run, else ServerChanged);
        ConnectionLost if the server cannot be reached in time, BackendError
        for an error reply."""
        self._check_open()
        if pool is None:
            raise CoordinatorClosed("this memcached backend is not connected")
        started = time.monotonic()
        try:
            replies, reached = pool.run(b"".join(commands), len(commands), until, server)
        except (OSError, MetaError, LoginRefused) as exc:
            if self._closed:
                raise CoordinatorClosed("this memcached backend is closed") from None
            if isinstance(exc, OSError):
                raise self._lost(exc, started) from None
            if isinstance(exc, LoginRefused) or _unauthenticated(exc):
                raise self._login_refused(str(exc)) from None
            raise BackendError(f"memcached at {self.url.redacted()}: {exc}") from None
        done = Replies()
        for reply in replies:
            if isinstance(reply, MetaError):
                raise self._refused(reply)
            done.append(reply)
        done.server = reached
        return done

    def _login_refused(self, cause: str) -> AuthenticationFailed:
        given = "no credentials" if self.url.username is None and self.url.password is None else \
            f"user {self.url.username or ''!r} and the URL's password"
        return AuthenticationFailed(f"memcached at {self.url.redacted()} refused the login ({given}): {cause}; "
                                    "fix user:password in the URL (memcached://user:password@host:port), or "
                                    "the server's -Y authfile")

    def _refused(self, error: MetaError) -> BackendError | AuthenticationFailed:
        text = str(error)
        if _unauthenticated(error):
            return self._login_refused(text)
        if "out of memory" in text:
            return BackendError(f"memcached at {self.url.redacted()} is full and refuses to store ({text}): give "
                                "it more memory (-m); run with -M so that it never evicts instead")
        if "too large" in text:
            return BackendError(f"memcached at {self.url.redacted()} refused an item over its size limit ({text}): "
                                "raise it with -I")
        return BackendError(f"memcached at {self.url.redacted()} answered: {text}")

    @contextlib.contextmanager
    def _call(self) -> Iterator[float]:
        """A primitive's deadline (``until``), with its errors translated."""
        self._check_open()
        started = time.monotonic()
        with self._translated(started):
            yield started + remaining(self._socket_timeout)

    # -- session ----------------------------------------------------------
    def _session_value(self) -> bytes:
        return b"%.6f" % time.time()

    def open_session(self, ttl: float) -> str:
        expiry, granted = _expiry(ttl)
        session_id = uuid.uuid4().hex
        with self._call() as until:
            (reply,) = self._run([ms(session_key(session_id), self._session_value(), b"T%d ME" % expiry)], until)
        if reply.code != b"HD":
            raise BackendError(f"memcached at {self.url.redacted()} did not store the session ({reply.code!r})")
        self._session = (session_id, expiry)
        self.granted_ttl = granted
        return session_id

    def refresh_session(self) -> None:
        session = self._session
        if session is None:
            raise SessionExpired("there is no memcached session")
        with self._call() as until:
            (reply,) = self._run([ms(session_key(session[0]), self._session_value(), b"T%d MR" % session[1])],
                                 until)
        if reply.code != b"HD":
            self._store.mark_dead([session[0]])
            raise SessionExpired("the memcached session ended (expired, deleted, or the server restarted)")

    def close_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        with self._call() as until:
            self._run([md(session_key(session[0]))], until)
        if self._poller is not None:
            self._poller.session_ended(session[0])

    def expire_session(self, session_id: str) -> bool:
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            return False
        with self._call() as until:
            (reply,) = self._run([md(session_key(session_id))], until)
        if reply.code != b"HD":
            return False
        if self._poller is not None:
            self._poller.session_ended(session_id)
        return True

    def session_last_seen(self, session_id: str) -> float | None:
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            return None
        with self._call() as until:
            (reply,) = self._run([mg(session_key(session_id), b"v")], until)
        if reply.code != b"VA" or reply.value is None:
            return None
        try:
            return float(reply.value)
        except ValueError:
            raise BackendError(f"memcached at {self.url.redacted()} holds a session item that is not moot's") \
                from None

    def _own_session(self) -> str | None:
        session = self._session
        return None if session is None else session[0]

    def _own_session_gone(self, session_id: str) -> None:
        """The session ended without this object asking (expired, evicted, lost in a restart)."""
        self._store.mark_dead([session_id])
        dispatcher = self._dispatcher
        if self._own_session() == session_id and dispatcher is not None:
            dispatcher.submit(self._session_lost)

    def _owner(self, ephemeral: bool) -> str | None:
        self._check_open()
        if not ephemeral:
            return None
        session_id = self._own_session()
        if session_id is None or self._store.is_dead(session_id):
            raise SessionExpired("ephemeral keys need a live session")
        return session_id

    def _check_own(self, owner: str | None, alive: dict[str, bool]) -> None:
        if owner is not None and not alive[owner]:
            self._own_session_gone(owner)
            raise SessionExpired("the memcached session ended")

    # -- keys -------------------------------------------------------------
    def _committed(self, written: Directory) -> None:
        poller = self._poller
        if poller is not None:
            poller.changed(written)

    def _read(self, paths: Sequence[str], until: float,
              names: dict[str, frozenset[str]] | None = None) -> dict[str, Directory]:
        """The live entries of ``paths``, spilled values loaded (with
        ``names``: and each one's subdirectories, filled in)."""
        while True:
            found = self._store.read(paths, until, names=names)
            values = self._store.load(found.values(), until)
            if values is not None:
                break
        for path, directory in list(found.items()):
            if any(r.spilled for r in directory.entries.values()):
                found[path] = loaded = directory.copy()  # the cache's copy is shared: not changed in place
                for leaf, r in directory.entries.items():
                    if r.spilled:
                        loaded.entries[leaf] = record(r.version, r.seq, r.owner, values[(path, leaf)])
        return found

    def get(self, key: str) -> Entry | None:
        path, leaf = split_key(key)
        with self._call() as until:
            found = self._read([path], until)[path].entries.get(leaf)
        return None if found is None else found.entry(key)

    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        path, leaf = split_key(key)
        owner = self._owner(ephemeral)
        value = bytes(value)

        def plan(state: Directory) -> Plan:
            existing = state.entries.get(leaf)
            if existing is not None:
                return Plan(None, [existing.owner] if existing.owner else [], again_if_dead=True)
            new = state.copy()
            new.entries[leaf] = record(new.bump(), None, owner, value)
            return Plan(new, [owner] if owner else [], new.entries[leaf])

        with self._call() as until:
            done, alive = self._store.transact(path, plan, until)
        if done.new is None:
            return None
        self._check_own(owner, alive)
        return cast(Entry, done.result.entry(key, value))

    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        path, leaf = split_key(key)
        self._check_open()
        value = bytes(value)

        def plan(state: Directory) -> Plan:
            existing = state.entries.get(leaf)
            if existing is None or existing.version != version:
                return Plan(None)
            new = state.copy()
            new.entries[leaf] = record(new.bump(), existing.seq, existing.owner, value)
            return Plan(new, [existing.owner] if existing.owner else [], new.entries[leaf])

        with self._call() as until:
            done, alive = self._store.transact(path, plan, until)
        if done.new is None or not all(alive.values()):
            return None
        return cast(Entry, done.result.entry(key, value))

    def delete(self, key: str, version: int | None = None) -> bool:
        path, leaf = split_key(key)
        self._check_open()

        def plan(state: Directory) -> Plan:
            existing = state.entries.get(leaf)
            if existing is None or (version is not None and existing.version != version):
                return Plan(None)
            new = state.copy()
            del new.entries[leaf]
            return Plan(new, [existing.owner] if existing.owner else [])

        with self._call() as until:
            done, alive = self._store.transact(path, plan, until)
        return done.new is not None and all(alive.values())

    def list(self, prefix: str) -> builtins.list[Entry]:
        check_prefix(prefix)
        found: builtins.list[Entry] = []
        level = [prefix[:prefix.rfind("/") + 1]]
        with self._call() as until:
            while level:
                below = []
                names: dict[str, frozenset[str]] = {}
                for directory in self._read(level, until, names).values():
                    found += [r.entry(directory.path + leaf) for leaf, r in directory.entries.items()
                              if (directory.path + leaf).startswith(prefix)]
                    subs = (f"{directory.path}{name}/" for name in sorted(names[directory.path]))
                    below += [sub for sub in subs if sub.startswith(prefix)]
                level = below
        return sorted(found, key=lambda e: e.key)

    def names(self, directory: str) -> builtins.list[str]:
        """One read of the directory item (its owners' sessions checked in the
        same pipeline): no spilled value is loaded, no Entry built."""
        check_prefix(directory)
        if directory and not directory.endswith("/"):
            return super().names(directory)
        with self._call() as until:
            return sorted(self._store.read([directory], until)[directory].entries)

    def _sequential(self, prefix: str, value: bytes, ephemeral: bool,
                    with_queue: bool) -> tuple[Entry, builtins.list[Entry]]:
        check_prefix(prefix)
        if prefix and not prefix.endswith("/"):
            raise InvalidArgument(f"{prefix!r:.80} is not a prefix (it must end with '/')")
        owner = self._owner(ephemeral)
        value = bytes(value)

        def plan(state: Directory) -> Plan:
            new = state.copy()
            counter = new.bump()
            leaf = f"{counter:020d}"
            new.entries[leaf] = record(counter, counter, owner, value)
            others = sorted(state.owners() - {owner}) if with_queue else []
            return Plan(new, ([owner] if owner else []) + others, leaf)

        with self._call() as until:
            done, alive = self._store.transact(prefix, plan, until)
            self._check_own(owner, alive)
            assert done.new is not None
            mine = done.new.entries[done.result].entry(prefix + done.result, value)
            if not with_queue:
                return mine, []
            live = {leaf: r for leaf, r in done.new.entries.items() if r.owner is None or alive.get(r.owner, True)}
            if any(r.spilled for leaf, r in live.items() if leaf != done.result):
                return mine, self.list(prefix)  # values of others to load: read the queue again
            queue = [mine if leaf == done.result else r.entry(prefix + leaf) for leaf, r in live.items()]
        return mine, sorted(queue, key=lambda e: e.key)

    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._sequential(prefix, value, ephemeral, False)[0]

    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """One round trip when this object's view of the queue is current:
        the entry written under CAS, the owners of the others checked in the same pipeline."""
        return self._sequential(prefix, value, True, True)

    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        leaf: str | None
        if key == "" or key.endswith("/"):
            path, leaf = check_prefix(key), None
        else:
            path, leaf = split_key(key)
        poller = self._poller
        self._check_open()
        if poller is None:
            raise CoordinatorClosed("this memcached backend is not connected")

        def first(path: str) -> Directory:
            with self._call() as until:
                return self._store.read([path], until)[path]

        return poller.watch(path, leaf, callback, first)


def _unauthenticated(error: BaseException) -> bool:
    """An error reply of a server run with -Y to a connection that has not logged in."""
    return "unauthenticated" in str(error).lower()
