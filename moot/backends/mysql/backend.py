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
from moot.backends._support.lost import spent
from moot.backends._support.tls import option_names, tls_context
from moot.backends.base import Backend, Dispatcher, Entry, Watch
from moot.backends.mysql import hints, sql
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
    PermissionDenied,
    SessionExpired,
)
from moot.url import BackendURL, option_float

#: PyMySQL's spellings of the TLS options.
MYSQL_ALIASES: Mapping[str, str] = {"ssl_ca": "ca_cert", "ssl_cert": "cert", "ssl_key": "key",
                                    "ssl_verify_cert": "verify"}

_PREFIX = re.compile(r"[A-Za-z0-9_]{0,32}")
#: A command (1142) or a column (1143) the user has no privilege for.
_NO_PRIVILEGE = frozenset({1142, 1143})
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
        # The server refuses a user that must show a client certificate (REQUIRE X509) or use TLS
        # (REQUIRE SSL) just as it refuses a wrong password: say so when the URL gives neither.
        given = {MYSQL_ALIASES.get(name, name) for name in options}
        self._refused_hint = "" if "cert" in given else \
            " (a user that must show a client certificate, REQUIRE X509, also needs cert= and key=)" if tls else \
            " (a user that must connect over TLS, REQUIRE SSL or X509, also needs tls=true)"
        self._identity: tuple[object, ...] = (tuple(self._hosts), self._database, prefix)
        self._sql = {name: sql.render(getattr(sql, name), prefix) for name in (
            "GET", "LIST", "CREATE", "CAS", "DELETE", "SEQUENTIAL", "ENQUEUE", "OPEN_SESSION", "REFRESH_SESSION",
            "END_SESSION", "LAST_SEEN", "COUNTERS", "RECHECK", "PROBE", "ENQUEUE_HINTED", "DELETE_HINTED",
            "HINT_WAIT", "HINT_SALT", "VERSIONS", "RECHECK_PEEK", "DELETE_BLOCK", "DELETE_HINTED_BLOCK",
            "SEQUENTIAL_BLOCK", "ENQUEUE_BLOCK", "ENQUEUE_HINTED_BLOCK", "HINT_WAIT_BLOCK", "NAMES", "NAME_ROWS")}
        self._blocks = False  # MariaDB: compound statements in place of batches (sql.compound)
        self._session: tuple[str, int] | None = None  # id, ttl in us
        self._pool: Pool | None = None
        self._poller: Poller | None = None
        self._dispatcher: Dispatcher | None = None
        self._holder: hints.Holder | None = None  # wake-up hints: not on Galera
        self._waiters: hints.Waiters | None = None
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
            self._blocks = sql.compound(self._pool.server)
            self._dispatcher = Dispatcher("moot-mysql-watch")
            watcher_pool = Pool(self._hosts, self._kwargs, 1, real_sockets=True)
            self._poller = Poller(self._identity, self._poll_runner(watcher_pool), self._sql["COUNTERS"],
                                  self._sql["RECHECK"], self._dispatcher, self._poll_interval, self._sql["VERSIONS"],
                                  self._sql["RECHECK_PEEK"])
            self._watcher_pool = watcher_pool
            if not self._pool.galera:
                self._start_hints(started + remaining(timeout))
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
        except (BackendError, PermissionDenied) as exc:
            if "(1142)" in str(exc) or "(1044)" in str(exc):
                raise PermissionDenied(
                    f"mysql at {self.url.redacted()}: the tables of moot are missing and this user may not "
                    f"create them ({exc}); have an administrator run:\n" + ";\n".join(statements) + ";\n"
                    "and grant SELECT, INSERT, UPDATE, DELETE on them") from None
            raise

    def _start_hints(self, until: float) -> None:
        """Wake-up hints (:mod:`.hints`): a connection for this backend's own, workers to wait on others'."""
        (salt,), = self._call(self._sql["HINT_SALT"], [], until=until)[-1]
        self._hint_salt = int(salt)
        holder_pool = self._hint_pool = Pool(self._hosts, self._kwargs, 1)
        self._holder = hints.Holder(lambda statement, args: self._call(statement, args, pool=holder_pool),
                                    self._hint_salt)
        self._waiters = hints.Waiters(lambda: Pool(self._hosts, self._kwargs, 1, real_sockets=True),
                                      self._statement("HINT_WAIT"))

    def _poll_runner(self, pool: Pool) -> Run:
        def run(statement: str, args: Any) -> builtins.list[Result]:
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
        if self._waiters is not None:
            self._waiters.close()
        if self._dispatcher is not None:
            self._dispatcher.close()
        for pool in (self._pool, getattr(self, "_watcher_pool", None), getattr(self, "_hint_pool", None)):
            if pool is not None:
                pool.close()

    def forget_after_fork(self) -> None:
        """Drop, without any I/O, every connection, the poller and the session
        inherited from the parent: the inherited sockets get a plain close()."""
        self._forked = self._closed = True
        self._session = None
        self.granted_ttl = None
        fork.untrack(self)
        for pool in (self._pool, getattr(self, "_watcher_pool", None), getattr(self, "_hint_pool", None)):
            if pool is not None:
                pool.forget()
        if self._poller is not None:
            self._poller.forget()
        if self._waiters is not None:
            self._waiters.forget()
        self._pool = self._poller = None
        self._holder = self._waiters = None
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
    def _call(self, statement: str, args: Any, until: float | None = None, pool: Pool | None = None) \
            -> builtins.list[Result]:
        """The result sets of ``statement``: one round trip within the caller's
        deadline bounded by ``socket_timeout``; only moot errors come out."""
        self._check_open()
        pool = pool or self._pool
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
                raise PermissionDenied(f"mysql at {self.url.redacted()} refused the database: {message}; grant "
                                       "the user access to it (docs/security.md), or name the database it was "
                                       "given in the URL") from None
            raise AuthenticationFailed(f"mysql at {self.url.redacted()} refused the credentials: {message}; fix "
                                       "user:password in the URL (mysql://user:password@host:port/db)"
                                       f"{self._refused_hint}") from None
        except Unanswered as exc:
            if self._closed:
                raise CoordinatorClosed("this mysql backend is closed") from None
            raise ConnectionLost(f"mysql at {self.url.redacted()} did not answer ({exc}); "
                                 f"gave up {spent(started)}") from None
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else "?"
            text = exc.args[1] if len(exc.args) > 1 else type(exc).__name__
            if code in _NO_PRIVILEGE:
                raise PermissionDenied(f"mysql at {self.url.redacted()} refused: {text} ({code}); grant the user "
                                       f"the privileges docs/security.md lists on database {self._database!r}, or "
                                       "name the database it was given in the URL") from None
            raise BackendError(f"mysql at {self.url.redacted()} answered: {text} ({code})") from None

    def _statement(self, name: str) -> str:
        """The statement ``name``: its compound form on MariaDB, if it has one."""
        return self._sql.get(name + "_BLOCK", self._sql[name]) if self._blocks else self._sql[name]

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
        if self._holder is not None:
            self._holder.session_ended()
        self._call(self._sql["OPEN_SESSION"], [session_id, ttl_us, ttl_us])
        self._session = (session_id, ttl_us)
        self.granted_ttl = ttl_us / 1_000_000
        return session_id

    def refresh_session(self) -> None:
        session = self._session
        if session is None:
            raise SessionExpired("there is no mysql session")
        if not self._call(self._sql["REFRESH_SESSION"], [session[0]])[-1].affected:
            raise SessionExpired("the mysql session expired")

    def close_session(self) -> None:
        session, self._session = self._session, None
        if self._holder is not None:
            self._holder.session_ended()
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

    def _wrote(self, directory: bytes, counter: Any, before: int | None = None, removed: bytes | None = None) -> None:
        """Tell this process's pollers (:func:`~moot.backends.mysql.poller.local_write`)."""
        if counter is not None:
            local_write(self._identity, directory, int(counter), before, removed)

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
        args = {"k": raw, "dir": directory, "version": at}
        results = None if self._holder is None else self._holder.delete(raw, self._statement("DELETE_HINTED"), args)
        before, counter, deleted = sql.deleted(results or self._call(self._statement("DELETE"), args))
        if not deleted:
            return False
        self._wrote(directory, counter, before, raw)
        return True

    def list(self, prefix: str) -> builtins.list[Entry]:
        raw = self._key(prefix)
        return [_entry(row) for row in self._call(self._sql["LIST"], [raw, raw + b"\xff"])[-1]]

    def names(self, directory: str) -> builtins.list[str]:
        """One SELECT answering one row: the live names joined (:data:`sql.NAMES`), sorted here."""
        raw = self._key(directory)
        args = {"dir": raw, "upper": raw + b"\xff", "start": len(raw) + 1}
        ((count, keys, joined),) = self._call(self._sql["NAMES"], args)[-1]
        if not count:
            return []
        if len(joined) != int(keys) - count * len(raw) + count - 1:  # cut short by the server: a row per name
            return [bytes(row[0]).decode() for row in self._call(self._sql["NAME_ROWS"], args)[-1]]
        return sorted(bytes(joined).decode().split("/"))

    def _sequential(self, name: str, prefix: str, value: bytes, ephemeral: bool) \
            -> tuple[Entry, builtins.list[Result]]:
        owner = self._owner(ephemeral)
        directory = self._key(prefix)
        if len(directory) + 20 > sql.MAX_KEY_BYTES:
            raise InvalidArgument(f"a mysql key is at most {sql.MAX_KEY_BYTES} bytes; this prefix leaves no room")
        args = {"dir": directory, "v": bytes(value), "owner": owner}
        results = None
        if self._holder is not None and name == "ENQUEUE":
            results = self._holder.enqueue(self._statement("ENQUEUE_HINTED"), directory, args)
        results = results or self._call(self._statement(name), args)
        seq, inserted = sql.outcome(results)
        if not inserted:
            raise SessionExpired("the mysql session expired")
        self._wrote(directory, seq)
        return Entry(f"{prefix}{seq:020d}", bytes(value), seq, seq, owner), results

    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._sequential("SEQUENTIAL", prefix, value, ephemeral)[0]

    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """One round trip: create the entry, then read the queue. Dead entries
        seen there (their owner session ended) are deleted by one more round
        trip, as a watcher's re-check does."""
        mine, results = self._sequential("ENQUEUE", prefix, value, True)
        rows = sql.listing(results)
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
        waiters = self._waiters
        hinted = waiters is not None and len(key) > 20 and key[-20:].isdigit() and key[-21] == "/"
        watch = poller.watch(directory, baseline, callback, self._key(key) if hinted else None)
        if hinted and waiters is not None:  # an entry of a queue: its maker may hold its hint
            name = hints.prefix(self._hint_salt, directory) + str(int(key[-20:]))
            waiters.wait(name, self._key(key), watch, lambda: poller.unhint(directory, watch))
        return watch
