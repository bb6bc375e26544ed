"""MySQLBackend: the primitives over InnoDB tables of one MySQL/MariaDB server or Galera cluster."""

from __future__ import annotations

import builtins
import contextlib
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pymysql  # type: ignore[import-untyped]

from moot.backends._support import fork
from moot.backends._support.tls import option_names, tls_context
from moot.backends.base import Backend, Dispatcher, Entry, Watch
from moot.backends.mysql import sql
from moot.backends.mysql.poller import Poller, Run, local_write
from moot.backends.mysql.pool import Pool, Refused, Result, Unanswered
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

#: PyMySQL's spellings of the TLS options.
MYSQL_ALIASES: Mapping[str, str] = {"ssl_ca": "ca_cert", "ssl_cert": "cert", "ssl_key": "key",
                                    "ssl_verify_cert": "verify"}

_PREFIX = re.compile(r"[A-Za-z0-9_]{0,32}")
_DATABASE = re.compile(r"[A-Za-z0-9_$-]{1,64}")
_MAX_TTL = 10 * 365 * 86400.0


def _directory(key: str) -> str:
    """The directory a key lives in ('' for a key without '/')."""
    head, slash, _ = key.rpartition("/")
    return head + slash


def _entry(row: tuple[Any, ...]) -> Entry:
    k, value, version, seq, owner = row
    return Entry(bytes(k).decode(), bytes(value), int(version), None if seq is None else int(seq),
                 None if owner is None else str(owner))


class MySQLBackend(Backend):
    """Primitives over InnoDB tables; see the package docstring."""

    OPTIONS = frozenset({"socket_timeout", "max_connections", "poll_interval", "table_prefix"}) | \
        option_names(MYSQL_ALIASES)

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        path = [part for part in url.path.split("/") if part]
        if len(path) != 1 or not _DATABASE.fullmatch(path[0]):
            raise InvalidURL(f"{url.redacted()}: the path must name the database, e.g. mysql://user@host:3306/moot")
        self._database = path[0]
        self._hosts = [url.host_port(3306, i) for i in range(max(1, len(url.hosts)))]
        self._socket_timeout = option_float(options, "socket_timeout", 5.0, maximum=3600)
        self._max_connections = int(option_float(options, "max_connections", 20, minimum=1, allow_equal=True,
                                                 maximum=10_000))
        self._poll_interval = option_float(options, "poll_interval", 0.02, minimum=0.001, allow_equal=True,
                                           maximum=60)
        prefix = options.get("table_prefix", "moot_")
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise InvalidURL(f"option table_prefix={prefix!r:.60} must be at most 32 of [A-Za-z0-9_]")
        self._prefix = prefix
        tls = tls_context(options, default=False, aliases=MYSQL_ALIASES, where=url.redacted())
        self._kwargs: dict[str, Any] = {"database": self._database, "charset": "utf8mb4"}
        if url.username is not None:
            self._kwargs["user"] = url.username
        if url.password is not None:
            self._kwargs["password"] = url.password
        if tls is not None:
            self._kwargs["ssl"] = tls
        else:
            self._kwargs["ssl_disabled"] = True
        self._identity: tuple[object, ...] = (tuple(self._hosts), self._database, prefix)
        self._sql = {name: sql.render(getattr(sql, name), prefix) for name in (
            "GET", "LIST", "CREATE", "CAS", "DELETE", "SEQUENTIAL", "ENQUEUE", "OPEN_SESSION", "REFRESH_SESSION",
            "END_SESSION", "LAST_SEEN", "COUNTERS", "RECHECK", "PROBE")}
        self._session: tuple[str, int] | None = None  # id, ttl in us
        self._pool: Pool | None = None
        self._poller: Poller | None = None
        self._dispatcher: Dispatcher | None = None
        self._closed = False
        self._forked = False

    def __repr__(self) -> str:
        return f"<MySQLBackend {self.url.redacted()}>"

    # -- lifecycle --------------------------------------------------------
    def connect(self, timeout: float) -> None:
        if self._forked:  # inherited across fork() and forgotten: start afresh
            self._forked = self._closed = False
        self._check_open()
        started = time.monotonic()
        with bounded(started + timeout):
            self._pool = Pool(self._hosts, self._kwargs, self._max_connections)
            self._ensure_tables(started + remaining(timeout))
            self._dispatcher = Dispatcher("moot-mysql-watch")
            watcher_pool = Pool(self._hosts, self._kwargs, 1, real_sockets=True)
            self._poller = Poller(self._identity, self._poll_runner(watcher_pool), self._sql["COUNTERS"],
                                  self._sql["RECHECK"], self._dispatcher, self._poll_interval)
            self._watcher_pool = watcher_pool
            fork.track(self)

    def _ensure_tables(self, until: float) -> None:
        """Create the tables if they are missing (a clear error if this user may not)."""
        try:
            self._call(self._sql["PROBE"], [], until=until)
        except BackendError as exc:
            if "(1146)" not in str(exc):
                raise
        else:
            return
        statements = [sql.render(s, self._prefix) for s in sql.TABLES]
        try:
            self._call("; ".join(statements), [], until=until)
        except BackendError as exc:
            if "(1142)" in str(exc) or "(1044)" in str(exc):
                raise BackendError(
                    f"mysql at {self.url.redacted()}: the tables of moot are missing and this user may not "
                    f"create them ({exc}); have an administrator run:\n" + ";\n".join(statements) + ";\n"
                    "and grant SELECT, INSERT, UPDATE, DELETE on them") from None
            raise

    def _poll_runner(self, pool: Pool) -> Run:
        def run(statement: str, args: list[Any]) -> builtins.list[Result]:
            return pool.run(statement, args, time.monotonic() + self._socket_timeout)
        return run

    def close(self) -> None:
        if self._closed:
            return
        if self._pool is not None:
            with contextlib.suppress(Exception):  # never raises; the session then ends by its TTL
                self.close_session()
        self._closed = True
        fork.untrack(self)
        if self._poller is not None:
            self._poller.close(self._socket_timeout)
        if self._dispatcher is not None:
            self._dispatcher.close()
        for pool in (self._pool, getattr(self, "_watcher_pool", None)):
            if pool is not None:
                pool.close()

    def forget_after_fork(self) -> None:
        """Drop, without any I/O, every connection, the poller and the session
        inherited from the parent: the inherited sockets get a plain close()."""
        self._forked = self._closed = True
        self._session = None
        self.granted_ttl = None
        fork.untrack(self)
        for pool in (self._pool, getattr(self, "_watcher_pool", None)):
            if pool is not None:
                pool.forget()
        if self._poller is not None:
            self._poller.forget()
        self._pool = self._poller = None
        self._dispatcher = None  # its thread stayed in the parent

    def ping(self) -> str:
        (version,), = self._call("SELECT VERSION()", [])[-1]
        assert self._pool is not None
        host, port = self._hosts[self._pool.current]
        galera = " (Galera node)" if self._pool.galera else ""
        return f"mysql {version} at {host}:{port}{galera}"

    def _check_open(self) -> None:
        if self._closed:
            if self._forked:
                raise CoordinatorClosed("this mysql backend was inherited across fork(); connect() in the child")
            raise CoordinatorClosed("this mysql backend is closed")

    # -- one batch per call ------------------------------------------------------
    def _call(self, statement: str, args: Any, until: float | None = None) -> builtins.list[Result]:
        """The result sets of ``statement``: one round trip within the caller's
        deadline bounded by ``socket_timeout``; only moot errors come out."""
        self._check_open()
        pool = self._pool
        if pool is None:
            raise CoordinatorClosed("this mysql backend is not connected")
        started = time.monotonic()
        if until is None:
            until = started + remaining(self._socket_timeout)
        try:
            return pool.run(statement, args, until)
        except Refused as exc:
            code, message = exc.args
            if code == 1044:
                raise AuthenticationFailed(f"mysql at {self.url.redacted()} refused the database: {message}; grant "
                                           "the user access to it (or name another database in the URL)") from None
            raise AuthenticationFailed(f"mysql at {self.url.redacted()} refused the credentials: {message}; fix "
                                       "user:password in the URL (mysql://user:password@host:port/db)") from None
        except Unanswered as exc:
            if self._closed:
                raise CoordinatorClosed("this mysql backend is closed") from None
            raise ConnectionLost(f"mysql at {self.url.redacted()} did not answer ({exc}); "
                                 f"gave up after {time.monotonic() - started:.2f}s") from None
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else "?"
            text = exc.args[1] if len(exc.args) > 1 else type(exc).__name__
            raise BackendError(f"mysql at {self.url.redacted()} answered: {text} ({code})") from None

    def _key(self, key: str) -> bytes:
        raw = key.encode()
        if len(raw) > sql.MAX_KEY_BYTES:
            raise InvalidArgument(f"a mysql key is at most {sql.MAX_KEY_BYTES} bytes; this one is {len(raw)}")
        return raw

    # -- session ----------------------------------------------------------
    def open_session(self, ttl: float) -> str:
        self._check_open()
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
            raise InvalidArgument(f"ttl={ttl!r}: a session TTL must be a positive, finite number of seconds")
        ttl_us = max(1, round(min(ttl, _MAX_TTL) * 1_000_000))
        session_id = uuid.uuid4().hex
        self._call(self._sql["OPEN_SESSION"], [session_id, ttl_us, ttl_us])
        self._session = (session_id, ttl_us)
        self.granted_ttl = ttl_us / 1_000_000
        return session_id

    def refresh_session(self) -> None:
        session = self._session
        if session is None:
            raise SessionExpired("there is no mysql session")
        (found,), = self._call(self._sql["REFRESH_SESSION"], [session[0]])[-1]
        if not int(found):
            raise SessionExpired("the mysql session expired")

    def close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            self._call(self._sql["END_SESSION"], [session[0]])

    def expire_session(self, session_id: str) -> bool:
        (was,), = self._call(self._sql["END_SESSION"], [str(session_id)[:64]])[-1]
        return bool(int(was or 0))

    def session_last_seen(self, session_id: str) -> float | None:
        rows = self._call(self._sql["LAST_SEEN"], [str(session_id)[:64]])[-1]
        if not rows:
            return None
        ttl_us, left_us = rows[0]
        return time.time() - max(0, int(ttl_us) - int(left_us)) / 1_000_000

    # -- keys -------------------------------------------------------------
    def _owner(self, ephemeral: bool) -> str | None:
        self._check_open()
        if not ephemeral:
            return None
        session = self._session
        if session is None:
            raise SessionExpired("ephemeral keys need a live session")
        return session[0]

    def _wrote(self, directory: bytes, counter: Any) -> None:
        if counter is not None:
            local_write(self._identity, directory, int(counter))

    def get(self, key: str) -> Entry | None:
        rows = self._call(self._sql["GET"], [self._key(key)])[-1]
        return _entry(rows[0]) if rows else None

    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        owner = self._owner(ephemeral)
        raw, directory = self._key(key), _directory(key).encode()
        (made, counter, alive), = self._call(self._sql["CREATE"], [raw, directory, bytes(value), owner])[-1]
        if not int(alive):
            raise SessionExpired("the mysql session expired")
        if not int(made):
            return None
        self._wrote(directory, counter)
        return Entry(key, bytes(value), int(counter), None, owner)

    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        raw, directory = self._key(key), _directory(key).encode()
        (hit, counter, seq, owner), = self._call(self._sql["CAS"], [raw, directory, bytes(value), int(version)])[-1]
        if not int(hit):
            return None
        self._wrote(directory, counter)
        return Entry(key, bytes(value), int(counter), None if seq is None else int(seq),
                     None if owner is None else str(owner))

    def delete(self, key: str, version: int | None = None) -> bool:
        raw, directory = self._key(key), _directory(key).encode()
        at = None if version is None else int(version)
        _, advance, deleted, _ = self._call(self._sql["DELETE"], {"k": raw, "dir": directory, "version": at})
        if not deleted.affected:
            return False
        self._wrote(directory, advance.insert_id)
        return True

    def list(self, prefix: str) -> builtins.list[Entry]:
        raw = self._key(prefix)
        return [_entry(row) for row in self._call(self._sql["LIST"], [raw, raw + b"\xff"])[-1]]

    def _sequential(self, name: str, prefix: str, value: bytes, ephemeral: bool) \
            -> tuple[Entry, builtins.list[Result]]:
        owner = self._owner(ephemeral)
        directory = self._key(prefix)
        if len(directory) + 20 > sql.MAX_KEY_BYTES:
            raise InvalidArgument(f"a mysql key is at most {sql.MAX_KEY_BYTES} bytes; this prefix leaves no room")
        results = self._call(self._sql[name], {"dir": directory, "v": bytes(value), "owner": owner})
        _, advance, inserted = results[:3]
        if not inserted.affected:
            raise SessionExpired("the mysql session expired")
        seq = int(advance.insert_id)
        self._wrote(directory, seq)
        return Entry(f"{prefix}{seq:020d}", bytes(value), seq, seq, owner), results

    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._sequential("SEQUENTIAL", prefix, value, ephemeral)[0]

    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """One round trip: create the entry, then read the queue. Dead entries
        seen there (their owner session ended) are deleted by one more round
        trip, as a watcher's re-check does."""
        mine, results = self._sequential("ENQUEUE", prefix, value, True)
        rows = results[-1]
        if not all(int(row[5]) for row in rows):
            with contextlib.suppress(ConnectionLost, BackendError):  # the poller's re-check tries again
                self._recheck(prefix.encode())
        return mine, [_entry(row[:5]) for row in rows if int(row[5])]

    def _recheck(self, directory: bytes) -> None:
        """Delete the dead entries directly under ``directory`` (advancing its counter if any went)."""
        removed, _, counter = self._call(self._sql["RECHECK"], [directory])[-1][0]
        if int(removed) and counter is not None:
            self._wrote(directory, counter)

    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        self._check_open()
        poller = self._poller
        if poller is None:
            raise CoordinatorClosed("this mysql backend is not connected")
        directory = self._key(key if key == "" or key.endswith("/") else _directory(key))
        baseline = None
        if not poller.knows(directory):
            rows = self._call(f"SELECT n FROM {self._prefix}counters WHERE dir = %s", [directory])[-1]
            baseline = int(rows[0][0]) if rows else 0
        return poller.watch(directory, baseline, callback)
