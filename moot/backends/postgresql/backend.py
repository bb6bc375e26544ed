"""PostgreSQLBackend: the primitives over one PostgreSQL database."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import math
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from moot.backends._support import fork
from moot.backends._support.lost import connection_lost
from moot.backends._support.tls import handshake_failure, option_names, tls_context
from moot.backends.base import Backend, Dispatcher, Entry, Watch
from moot.backends.postgresql import schema
from moot.backends.postgresql.connection import Conn, Pool, connect
from moot.backends.postgresql.listener import Listener
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

log = logging.getLogger("moot.backends.postgresql")

#: libpq's spellings of the TLS options (see moot.backends._support.tls).
POSTGRESQL_ALIASES = {"sslrootcert": "ca_cert", "sslcert": "cert", "sslkey": "key"}

_MAX_TTL_MS = 10 * 365 * 86400 * 1000
#: Errors after which the transaction surely did nothing and is tried again.
#: A refused login as libpq words it before any SQLSTATE is known.
_AUTH_TEXT = re.compile(r"password|authentication|no pg_hba\.conf entry|role \".*\" does not exist")
_NO_CONNECT_TEXT = re.compile(r"permission denied for database")
_RETRIED = ("40P01", "40001")  # deadlock detected, serialization failure
#: A root certificate file that cannot exist (/dev/null is no directory).
_NO_ROOT_CERT = "/dev/null/moot-verify-false"
#: names() of a directory checks liveness with a hashed set of the live
#: sessions when it listed at least this many names, against at most this
#: many sessions; the directories so marked are at most this many.
_HASHED_MIN_NAMES = 64
_HASHED_MAX_SESSIONS = 2000
_HASHED_DIRECTORIES = 256


def _ttl_ms(ttl: float) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise InvalidArgument(f"ttl={ttl!r}: a session TTL must be a positive, finite number of seconds")
    return int(min(max(1, round(ttl * 1000)), _MAX_TTL_MS))


def _upper(prefix: str) -> str:
    """The least text above every key that starts with ``prefix`` ("C" collation)."""
    if not prefix:
        return chr(0x10FFFF)
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _entry(row: Sequence[Any]) -> Entry:
    key, value, version, seq, owner = row
    return Entry(key, bytes(value), int(version), None if seq is None else int(seq), owner)


class PostgreSQLBackend(Backend):
    """Primitives over one PostgreSQL database; see the package docstring."""

    OPTIONS = frozenset({"schema", "socket_timeout", "max_connections"}) | option_names(POSTGRESQL_ALIASES)

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        if len(url.hosts) > 1:
            raise InvalidURL(f"{url.redacted()}: {url.scheme}:// takes one host[:port]")
        self._host, self._port = url.host_port(5432)
        path = [part for part in url.path.split("/") if part]
        if len(path) > 1:
            raise InvalidURL(f"{url.redacted()}: the path must be one database name, e.g. /postgres")
        self._dbname = path[0] if path else (url.username or "postgres")
        name = options.get("schema", "moot")
        if not isinstance(name, str) or not schema.valid_schema(name):
            raise InvalidURL(f"option schema={name!r:.60} must be a lower-case SQL name ([a-z_][a-z0-9_]*, "
                             "at most 63 characters, not pg_...)")
        self._schema = name
        self._socket_timeout = option_float(options, "socket_timeout", 5.0, maximum=3600)
        self._max_connections = int(option_float(options, "max_connections", 20, minimum=1, allow_equal=True,
                                                 maximum=10_000))
        tls = tls_context(options, default=False, aliases=POSTGRESQL_ALIASES, where=url.redacted())
        self._conninfo = self._make_conninfo(tls)
        self._connect_timeout = self._socket_timeout
        self._session: tuple[str, int] | None = None  # id, ttl in ms
        self._closed = False
        self._forked = False
        self._connected = False
        self._pool: Pool | None = None
        self._listener: Listener | None = None
        self._dispatcher: Dispatcher | None = None
        self._sql = schema.queries(self._schema)
        #: Directories whose next names() checks liveness with one hashed set (see _plan_listing).
        self._hashed_listings: set[str] = set()

    def __repr__(self) -> str:
        return f"<PostgreSQLBackend {self.url.redacted()} schema={self._schema}>"

    def _make_conninfo(self, tls: ssl.SSLContext | None) -> str:
        params: dict[str, Any] = {
            "host": self._host, "port": self._port, "dbname": self._dbname,
            "application_name": "moot",
            # a statement the client gave up on does not run on (holding row locks) for long
            "options": f"-c statement_timeout={int(self._socket_timeout * 1000)} "
                       "-c client_connection_check_interval=1000",
        }
        if self.url.username:
            params["user"] = self.url.username
        if self.url.password is not None:
            params["password"] = self.url.password
        if tls is not None:  # the options were checked by tls_context; libpq loads the files itself
            given = {POSTGRESQL_ALIASES.get(k, k): v for k, v in self.options.items()}
            if tls.verify_mode == ssl.CERT_NONE:
                # require checks nothing only when libpq finds no root certificate file (it would
                # read ~/.postgresql/root.crt by default): name one that cannot exist
                params["sslmode"] = "require"
                params["sslrootcert"] = _NO_ROOT_CERT
            else:
                params["sslmode"] = "verify-full"
                params["sslrootcert"] = str(given.get("ca_cert") or "system")
            if given.get("cert"):
                params["sslcert"] = str(given["cert"])
                params["sslkey"] = str(given.get("key") or given["cert"])
        else:
            params["sslmode"] = "disable"
        return make_conninfo("", **params)

    # -- lifecycle --------------------------------------------------------
    def connect(self, timeout: float) -> None:
        if self._forked:  # inherited across fork() and forgotten: start afresh
            self._forked = self._closed = False
        self._check_open()
        started = time.monotonic()
        self._connect_timeout = timeout
        with bounded(started + timeout):
            self._pool = Pool(self._open_conn, self._max_connections)
            self._setup()
            self._dispatcher = Dispatcher("moot-postgresql-watch")
            self._listener = Listener(self._open_listener, self._recheck, self._session_left, self._session_gone,
                                      self._dispatcher, max(timeout, self._socket_timeout))
            self._listener.start()  # it connects when something is first watched
            self._connected = True
            fork.track(self)

    def close(self) -> None:
        if self._closed:
            return
        if self._connected:
            try:
                self.close_session()
            except Exception:
                log.debug("closing the postgresql session failed", exc_info=True)
        self._closed = True
        fork.untrack(self)
        if self._listener is not None:
            self._listener.close()
        if self._dispatcher is not None:
            self._dispatcher.close()
        if self._pool is not None:
            self._pool.close()

    def forget_after_fork(self) -> None:
        """Drop, without any I/O, every connection and the session inherited
        from the parent (see docs/design/postgresql.md, "Fork")."""
        self._forked = self._closed = True
        self._connected = False
        self._session = None
        self.granted_ttl = None
        fork.untrack(self)
        if self._listener is not None:
            self._listener.forget()
        if self._pool is not None:
            self._pool.forget()
        self._listener = None
        self._dispatcher = None  # its thread stayed in the parent
        self._pool = None

    def ping(self) -> str:
        (row,) = self._query("SELECT current_setting('server_version')", ())
        return f"postgresql {row[0]} at {self._host}:{self._port}/{self._dbname} (schema {self._schema})"

    # -- connections ------------------------------------------------------
    def _open_conn(self, until: float) -> Conn:
        return connect(self._conninfo, min(until, time.monotonic() + self._connect_timeout))

    def _open_listener(self) -> Conn:
        started = time.monotonic()
        until = started + remaining(self._connect_timeout)
        with self._translated(started):
            conn = connect(self._conninfo, until)
            try:
                conn.execute(f'LISTEN "{self._schema}"'.encode())
            except BaseException:
                conn.close()
                raise
        return conn

    def _check_open(self) -> None:
        if self._forked:
            raise CoordinatorClosed("this postgresql backend was inherited across fork(); its connections stay "
                                    "the parent's: connect again in the child (moot.connect)")
        if self._closed:
            raise CoordinatorClosed("this postgresql backend is closed")

    def _where(self) -> str:
        return f"postgresql at {self.url.redacted()}"

    def _lost(self, exc: BaseException, started: float) -> ConnectionLost:
        """The ConnectionLost for ``exc``, stating the time really spent."""
        return connection_lost(self._where(), exc, started)

    def _refused(self, exc: psycopg.Error) -> BackendError | AuthenticationFailed | PermissionDenied:
        """The error for an answer that retrying will not change."""
        if exc.sqlstate == "42501":  # insufficient_privilege
            return PermissionDenied(self._privileges_message(str(exc).strip()))
        if exc.sqlstate == "28P01" or exc.sqlstate == "28000":
            return self._credentials_refused(str(exc))
        return BackendError(f"{self._where()} answered: {str(exc).strip()}")

    def _credentials_refused(self, cause: str) -> AuthenticationFailed:
        role = self.url.username or "<the default role>"
        return AuthenticationFailed(f"{self._where()} refused the credentials of role {role!r}: {cause.strip()}; "
                                    "fix user:password in the URL (postgresql://user:password@host:port/db), or "
                                    "the server's roles and pg_hba.conf")

    def _privileges_message(self, cause: str) -> str:
        role = self.url.username or "<the role moot connects as>"
        return (f"{self._where()} refused: {cause}. The role {role!r} may not create or use moot's schema "
                f"{self._schema!r}; have an administrator run (as a role that may create it):\n"
                f"{schema.admin_script(self._schema, role)}"
                f"(or: CREATE SCHEMA {self._schema} AUTHORIZATION \"{role}\"; and moot creates the rest "
                "on first use); if the schema is another tenant's, use the one this role was given (the schema "
                "option; docs/security.md)")

    @contextlib.contextmanager
    def _translated(self, started: float) -> Iterator[None]:
        """Raise only moot errors out of the block."""
        try:
            yield
        except (TimeoutError, OSError) as exc:
            raise self._lost(exc, started) from None
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and exc.sqlstate is None:
                failure = handshake_failure(exc, self.url.redacted())
                if failure is not None:
                    raise failure from None
                text = str(exc)
                if _NO_CONNECT_TEXT.search(text):  # the role is known, the database is not its
                    raise PermissionDenied(f"{self._where()} refused the database: {text.strip()}; grant the "
                                           f"role CONNECT on database {self._dbname!r}, or name the database it "
                                           "was given in the URL (docs/security.md)") from None
                if _AUTH_TEXT.search(text):
                    raise self._credentials_refused(text) from None
                raise self._lost(exc, started) from None
            if exc.sqlstate in (schema.SESSION_GONE,):
                raise SessionExpired("the postgresql session expired") from None
            if isinstance(exc, psycopg.OperationalError) and exc.sqlstate not in ("42501", "28P01", "28000"):
                raise self._lost(exc, started) from None
            raise self._refused(exc) from None

    def _query(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        """The rows of one statement (autocommit: one transaction, one round
        trip), within the caller's deadline bounded by ``socket_timeout``. A
        statement is sent again only when the server says it did nothing
        (deadlock detected, serialization failure)."""
        self._check_open()
        pool = self._pool
        if pool is None:
            raise CoordinatorClosed("this postgresql backend is not connected")
        started = time.monotonic()
        until = started + remaining(self._socket_timeout)
        query = sql.encode()
        with self._translated(started):
            while True:
                try:
                    conn = pool.checkout(until)
                except ConnectionAbortedError:
                    raise CoordinatorClosed("this postgresql backend is closed") from None
                conn.until = until
                try:
                    cursor = conn.execute(query, params, prepare=True)
                    rows = cursor.fetchall() if cursor.description else []
                except psycopg.Error as exc:
                    if conn.broken or (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None):
                        pool.discard(conn)
                    else:
                        pool.checkin(conn)
                    if exc.sqlstate in _RETRIED and time.monotonic() < until:
                        continue
                    raise
                except BaseException:
                    pool.discard(conn)
                    raise
                pool.checkin(conn)
                return rows

    def _setup(self) -> None:
        """Create the layout on first use (docs/design/postgresql.md, "Schema")."""
        try:
            rows = self._query(self._sql["version"], ())
        except BackendError as exc:
            if isinstance(exc, ConnectionLost) or "does not exist" not in str(exc):
                raise
            rows = []
        if rows and rows[0][0] == schema.VERSION:
            return
        self._refuse_newer(rows[0][0] if rows else None)
        started = time.monotonic()
        assert self._pool is not None
        with self._translated(started):
            conn = self._pool.checkout(started + remaining(self._socket_timeout))
            conn.until = started + remaining(self._socket_timeout)
            try:
                # BEGIN and COMMIT sent by hand: a wait cut by the deadline leaves the connection with a
                # statement in progress, which is closed (the server rolls back), not sent a ROLLBACK
                conn.execute(b"BEGIN")
                # one creator at a time (CREATE ... IF NOT EXISTS races otherwise)
                conn.execute(b"SELECT pg_advisory_xact_lock(%s)", (hash_of(self._schema),))
                found = schema.installed(conn, self._schema, self._sql["version"])
                self._refuse_newer(found)
                if found != schema.VERSION:  # clients that raced this one wait once, then find it made
                    for statement in schema.creation(conn, self._schema):
                        conn.execute(statement.encode())
                conn.execute(b"COMMIT")
            except BaseException:
                self._pool.discard(conn)
                raise
            self._pool.checkin(conn)

    def _refuse_newer(self, found: int | None) -> None:
        if found is not None and found > schema.VERSION:
            raise BackendError(f"{self._where()}: schema {self._schema!r} was made by a newer moot "
                               f"(layout {found}, this one knows {schema.VERSION}); upgrade moot")

    # -- session ----------------------------------------------------------
    def open_session(self, ttl: float) -> str:
        self._check_open()
        session_id, ms = uuid.uuid4().hex, _ttl_ms(ttl)
        started = time.monotonic()
        self._query(self._sql["open"], (session_id, ms, ms))
        self._session = (session_id, ms)
        self.granted_ttl = ms / 1000
        if self._listener is not None:
            self._listener.watch_session(session_id, started + ms / 1000)
        return session_id

    def refresh_session(self) -> None:
        self._check_open()
        session = self._session
        if session is None:
            raise SessionExpired("there is no postgresql session")
        started = time.monotonic()
        if not self._query(self._sql["refresh"], (session[0],)):
            raise SessionExpired("the postgresql session expired")
        if self._listener is not None:
            self._listener.watch_session(session[0], started + session[1] / 1000)

    def close_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if self._listener is not None:
            self._listener.watch_session(None, None)
        self._query(self._sql["reap"], (session[0], True))

    def expire_session(self, session_id: str) -> bool:
        (row,) = self._query(self._sql["reap"], (session_id, True))
        return bool(row[0])

    def session_last_seen(self, session_id: str) -> float | None:
        rows = self._query(self._sql["seen"], (session_id,))
        if not rows:
            return None
        return time.time() - max(0.0, float(rows[0][0]) / 1000)

    def _session_left(self, session_id: str) -> float | None:
        """Seconds the session has left, None (once reaped) if it is gone (listener thread)."""
        rows = self._query(self._sql["left"], (session_id,))
        if rows:
            return max(int(rows[0][0]), 0) / 1000
        self._query(self._sql["reap"], (session_id, False))
        return None

    def _session_gone(self, session_id: str) -> None:
        """The session ended without this object asking (evicted, or expired)."""
        session, dispatcher = self._session, self._dispatcher
        if session is not None and session[0] == session_id and dispatcher is not None:
            dispatcher.submit(self._session_lost)

    # -- keys -------------------------------------------------------------
    def _owner(self, ephemeral: bool) -> str | None:
        self._check_open()
        if not ephemeral:
            return None
        session = self._session
        if session is None:
            raise SessionExpired("ephemeral keys need a live session")
        return session[0]

    def get(self, key: str) -> Entry | None:
        rows = self._query(self._sql["get"], (key,))
        return _entry(rows[0]) if rows else None

    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        owner = self._owner(ephemeral)
        (row,) = self._query(self._sql["add"], (key, bytes(value), owner))
        return None if row[0] is None else Entry(key, bytes(value), int(row[0]), None, owner)

    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        rows = self._query(self._sql["cas"], (key, bytes(value), int(version)))
        if not rows:
            return None
        new_version, seq, owner = rows[0]
        return Entry(key, bytes(value), int(new_version), None if seq is None else int(seq), owner)

    def delete(self, key: str, version: int | None = None) -> bool:
        (row,) = self._query(self._sql["remove"], (key, None if version is None else int(version)))
        return bool(row[0])

    def list(self, prefix: str) -> list[Entry]:
        return [_entry(row) for row in self._query(self._sql["scan"], (prefix, _upper(prefix)))]

    def names(self, directory: str) -> builtins.list[str]:
        """One SELECT returning the names only (no values, no versions), joined by '/'."""
        start = len(directory) + 1  # substr() counts characters from 1, as len() counts them
        query = self._sql["names_hashed" if directory in self._hashed_listings else "names"]
        ((joined, sessions),) = self._query(query, (start, directory, _upper(directory), start))
        listed = joined.split("/") if joined is not None else []
        self._plan_listing(directory, len(listed), int(sessions))
        return sorted(listed)

    def _plan_listing(self, directory: str, listed: int, sessions: int) -> None:
        """Choose how the next names() of ``directory`` checks its owners'
        liveness: an index probe per entry (~1 us each), or one hashed set of
        every live session (~0.3 us per session) when the ``listed`` names
        outnumber a third of the ``sessions``, up to a set small enough to
        hash within any work_mem (docs/design/postgresql.md, "Listings")."""
        if listed >= _HASHED_MIN_NAMES and sessions <= min(3 * listed, _HASHED_MAX_SESSIONS):
            if len(self._hashed_listings) >= _HASHED_DIRECTORIES:
                self._hashed_listings.clear()
            self._hashed_listings.add(directory)
        else:
            self._hashed_listings.discard(directory)

    def _sequential(self, prefix: str, value: bytes, ephemeral: bool, listed: bool) -> builtins.list[Entry]:
        owner = self._owner(ephemeral)
        rows = self._query(self._sql["sequential"], (prefix, _upper(prefix), bytes(value), owner, listed))
        return [_entry(row) for row in rows]

    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._sequential(prefix, value, ephemeral, False)[0]

    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """One function call: create the entry and read the queue, in one transaction."""
        mine, *entries = self._sequential(prefix, value, True, True)
        return mine, entries

    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        self._check_open()
        listener = self._listener
        if listener is None:
            raise CoordinatorClosed("this postgresql backend is not connected")
        return listener.watch(key, callback)

    def _recheck(self, key: str) -> int:
        """Reap dead owners of the watched ``key`` (or of the keys directly
        under a prefix); ms until its first foreign owner expires, -1 if none."""
        session = self._session
        exact = not (key == "" or key.endswith("/"))
        upper = key + "\x01" if exact else _upper(key)
        (row,) = self._query(self._sql["recheck"], (key, upper, exact, session[0] if session else None))
        return -1 if row[0] is None else int(row[0])


def hash_of(name: str) -> int:
    """A stable 63-bit number for ``name`` (the advisory lock of its schema's creation)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1
