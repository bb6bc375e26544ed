"""RedisBackend: the primitives over one Redis server (or a Sentinel-managed primary)."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from moot.backends._support import fork
from moot.backends._support.lost import connection_lost
from moot.backends._support.tls import (
    REDIS_ALIASES,
    option_names,
    tls_context,
)
from moot.backends.base import Backend, Dispatcher, Entry, Watch
from moot.backends.redis.dialer import Dialer, _is_auth_error
from moot.backends.redis.listener import _Listener
from moot.backends.redis.pool import _Pool
from moot.backends.redis.resp import _AuthFailed, _pack, _RespError
from moot.backends.redis.scripts import KP, PREFIX_CHARS, SCRIPTS, _entry, dir_key, split_key
from moot.deadline import bounded, remaining
from moot.errors import (
    AuthenticationFailed,
    BackendError,
    ConfigurationError,
    ConnectionLost,
    CoordinatorClosed,
    InvalidArgument,
    InvalidURL,
    PermissionDenied,
    SessionExpired,
)
from moot.url import BackendURL, option_float

log = logging.getLogger("moot.backends.redis")


# -- the backend -------------------------------------------------------------------
_MAX_TTL_MS = 2**31 - 1  # PEXPIRE's argument: an int of ms that cannot overflow the server's clock


def _ttl_ms(ttl: float) -> int:
    """The session TTL as PEXPIRE takes it: an int of ms in [1, _MAX_TTL_MS]."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise InvalidArgument(f"ttl={ttl!r}: a session TTL must be a positive, finite number of seconds")
    return int(min(max(1, round(ttl * 1000)), _MAX_TTL_MS))


def _info_field(info: object, name: bytes) -> str:
    """One field of an INFO reply, '?' if absent."""
    if isinstance(info, bytes):
        for line in info.splitlines():
            if line.startswith(name + b":"):
                return line.split(b":", 1)[1].decode(errors="replace").strip()
    return "?"


class RedisBackend(Backend):
    """Primitives over one Redis server; see the package docstring."""

    OPTIONS = frozenset({"socket_timeout", "max_connections", "sentinel_password", "prefix"}) | \
        option_names(REDIS_ALIASES)

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        path = [part for part in url.path.split("/") if part]
        self._service: str | None = None  # the Sentinel service name of redis+sentinel://
        sentinels: list[tuple[str, int]] = []
        if url.scheme in ("redis+sentinel", "rediss+sentinel"):
            if not url.hosts or not 1 <= len(path) <= 2:
                raise InvalidURL(f"{url.redacted()}: write redis+sentinel://host:port[,host:port...]/service[/db]")
            self._service = path.pop(0)
            sentinels = [url.host_port(26379, i) for i in range(len(url.hosts))]
        elif len(url.hosts) > 1:
            raise InvalidURL(f"{url.redacted()}: {url.scheme}:// takes one host:port "
                             "(redis+sentinel:// takes several)")
        self._host, self._port = url.host_port(6379)
        db_text = path[0] if path else "0"
        if len(path) > 1 or not (db_text.isascii() and db_text.isdigit() and len(db_text) <= 9):
            raise InvalidURL(f"{url.redacted()}: the path must be a database number, e.g. /0")
        self._db = int(db_text)
        prefix = options.get("prefix", KP)
        if not isinstance(prefix, str) or not PREFIX_CHARS.fullmatch(prefix):
            raise InvalidURL(f"{url.redacted()}: option prefix={prefix!r:.80} must be 1 to 64 of "
                             "[A-Za-z0-9_.:/-] (e.g. prefix=billing: for the ACL patterns ~billing:* &billing:*)")
        self._prefix = prefix
        self._channels = f"{prefix}{self._db}:"
        self._socket_timeout = option_float(options, "socket_timeout", 5.0, maximum=3600)
        self._max_connections = int(option_float(options, "max_connections", 50, minimum=1, allow_equal=True,
                                                 maximum=10_000))
        tls = tls_context(options, default=url.scheme in ("rediss", "rediss+sentinel"), aliases=REDIS_ALIASES,
                          where=url.redacted())
        sentinel_password = options.get("sentinel_password")
        self._dialer = Dialer((self._host, self._port), self._db, tls, url.username, url.password,
                              self._socket_timeout, self._service, sentinels,
                              None if sentinel_password is None else str(sentinel_password))
        self._session: tuple[str, int] | None = None  # id, ttl in ms
        self._notices: Watch | None = None
        self._closed = False
        self._forked = False
        self._connected = False
        self._pool: _Pool | None = None
        self._listener: _Listener | None = None
        self._switches: _Listener | None = None
        self._dispatcher: Dispatcher | None = None
        self._kp, self._cp = prefix.encode(), self._channels.encode()
        self._scripts = {name: body.encode() for name, body in SCRIPTS.items()}
        self._shas = {name: hashlib.sha1(body).hexdigest().encode() for name, body in self._scripts.items()}

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url.redacted()}>"

    # -- lifecycle --------------------------------------------------------
    def connect(self, timeout: float) -> None:
        if self._forked:  # inherited across fork() and forgotten: start afresh
            self._forked = self._closed = False
        self._check_open()
        started = time.monotonic()
        self._dialer.connect_timeout = timeout
        with bounded(started + timeout), self._translated(started):
            self._pool = _Pool(self._dialer.open_command, self._max_connections)
            self._run([b"PING"])
            sock = self._dialer.open_pubsub()
            self._dispatcher = Dispatcher("moot-redis-watch")
            listen_timeout = max(timeout, self._socket_timeout)
            self._listener = _Listener(self._dialer.open_pubsub, self._recheck, self._session_left, self._session_gone,
                                       self._dispatcher, listen_timeout)
            self._listener.start(sock)
            self._connected = True
            fork.track(self)
            if self._service is not None:
                self._switches = _Listener(self._dialer.open_sentinel, self._recheck, self._session_left,
                                           self._session_gone, self._dispatcher, listen_timeout)
                self._switches.start(self._dialer.open_sentinel())
                self._switches.watch(b"+switch-master", None, self._on_switch_master, wait=True)

    def close(self) -> None:
        if self._closed:
            return
        if self._connected:
            try:
                self.close_session()
            except Exception:
                log.debug("closing the redis session failed", exc_info=True)
        self._closed = True
        fork.untrack(self)
        for listener in (self._listener, self._switches):
            if listener is not None:
                listener.close()
        if self._dispatcher is not None:
            self._dispatcher.close()
        if self._pool is not None:
            self._pool.close()

    def forget_after_fork(self) -> None:
        """Drop, without any I/O, every connection, the pool, the listeners
        and the session inherited from the parent (see docs/design/redis.md): the
        inherited sockets get a plain close() and nothing else."""
        self._forked = self._closed = True
        self._connected = False
        self._session, self._notices = None, None
        self.granted_ttl = None
        fork.untrack(self)
        for listener in (self._listener, self._switches):
            if listener is not None:
                listener.forget()
        if self._pool is not None:
            self._pool.forget()
        self._listener = self._switches = None
        self._dispatcher = None  # its thread stayed in the parent
        self._pool = None

    def ping(self) -> str:
        (info,) = self._run([b"INFO", b"server"])
        host, port = self._dialer.address(time.monotonic() + remaining(self._socket_timeout))
        where = f" (primary of Sentinel service {self._service!r})" if self._service else ""
        return f"redis {_info_field(info, b'redis_version')} at {host}:{port}{where}"

    # -- connections ------------------------------------------------------
    def _on_switch_master(self) -> None:
        """A Sentinel announced a failover (or the connection to the Sentinels was
        re-established, so one may have been missed): leave the old primary at
        once, as it may accept writes for a while before it learns it was demoted."""
        if self._pool is not None:
            self._pool.disconnect()
        if self._listener is not None:
            self._listener.reconnect()

    def _check_open(self) -> None:
        if self._forked:
            raise CoordinatorClosed("this redis backend was inherited across fork(); its connections stay the "
                                    "parent's: connect again in the child (moot.connect)")
        if self._closed:
            raise CoordinatorClosed("this redis backend is closed")

    def _refused(self, reply: object) -> AuthenticationFailed:
        """The error for credentials the server refused (or did not get)."""
        given = "no password" if self.url.password is None else \
            f"user {self.url.username or 'default'!r} and the URL's password"
        return AuthenticationFailed(f"redis at {self.url.redacted()} refused the credentials ({given}): {reply}; "
                                    "fix user:password in the URL (redis://user:password@host:port), or the "
                                    "server's users (ACL SETUSER / requirepass)")

    def _lost(self, exc: BaseException, started: float) -> ConnectionLost:
        """The ConnectionLost for ``exc``, stating the time really spent."""
        not_resp = f"sent a reply that is not RESP ({exc})" if isinstance(exc, _RespError | ValueError) else None
        return connection_lost(f"redis at {self.url.redacted()}", exc, started, not_resp)

    @contextlib.contextmanager
    def _translated(self, started: float) -> Iterator[None]:
        """Raise only moot errors out of the block."""
        try:
            yield
        except _AuthFailed as exc:
            raise self._refused(exc) from None
        except ConfigurationError:  # AuthenticationFailed, TLSFailed: ValueErrors, not replies that are not RESP
            raise
        except (OSError, _RespError, ValueError) as exc:
            raise self._lost(exc, started) from None

    def _run(self, *commands: builtins.list[bytes]) -> builtins.list[object]:
        """The replies to ``commands``, sent together: one round trip (plus a
        connection's handshake if a new one is needed), all within the
        caller's deadline bounded by ``socket_timeout``. Error replies come
        back as _RespError values."""
        self._check_open()
        started = time.monotonic()
        until = started + remaining(self._socket_timeout)
        pool = self._pool
        if pool is None:
            raise CoordinatorClosed("this redis backend is not connected")
        try:
            replies = pool.run(b"".join(_pack(*c) for c in commands), len(commands), until)
        except _AuthFailed as exc:
            raise self._refused(exc) from None
        except ConfigurationError:  # AuthenticationFailed, TLSFailed: ValueErrors, not replies that are not RESP
            raise
        except (OSError, _RespError, ValueError) as exc:
            if self._closed:
                raise CoordinatorClosed("this redis backend is closed") from None
            raise self._lost(exc, started) from None
        for reply in replies:
            if isinstance(reply, _RespError) and _is_permission_error(reply):
                raise self._denied(reply)
        return replies

    def _denied(self, reply: _RespError) -> PermissionDenied:
        """The error for a command, key or channel the ACL user may not use."""
        user = self.url.username or "default"
        return PermissionDenied(
            f"redis at {self.url.redacted()} refused user {user!r} access under the key prefix "
            f"{self._prefix!r}: {reply}; give the user the keys ~{self._prefix}* and the channels "
            f"&{self._prefix}* (docs/security.md), or use the prefix it was given (the prefix option)")

    def _eval(self, name: str, keys: builtins.list[str], args: builtins.list[str | bytes]) -> Any:
        """Run one of the scripts: one round trip (two if the server lacks it)."""
        command = [b"EVALSHA", self._shas[name], b"%d" % len(keys), *(k.encode() for k in keys),
                   self._kp, self._cp, *(a if isinstance(a, bytes) else a.encode() for a in args)]
        (reply,) = self._run(command)
        if isinstance(reply, _RespError) and str(reply).startswith("NOSCRIPT"):  # it never ran
            _, reply = self._run([b"SCRIPT", b"LOAD", self._scripts[name]], command)
        if isinstance(reply, _RespError):
            if str(reply).removeprefix("ERR ").startswith("MOOTSESSION"):  # Redis 7 adds the ERR
                raise SessionExpired("the redis session expired")
            if _is_auth_error(reply):
                raise self._refused(reply)
            raise BackendError(f"redis at {self.url.redacted()} answered: {reply}")
        return reply

    def _checked(self, reply: object) -> Any:
        """``reply``, or BackendError if it is an error reply."""
        if isinstance(reply, _RespError):
            if _is_auth_error(reply):
                raise self._refused(reply)
            raise BackendError(f"redis at {self.url.redacted()} answered: {reply}")
        return reply

    # -- session ----------------------------------------------------------
    def _session_key(self, session_id: str) -> str:
        return f"{self._prefix}s:{session_id}"

    def open_session(self, ttl: float) -> str:
        self._check_open()
        session_id, ms = uuid.uuid4().hex, _ttl_ms(ttl)
        key = self._session_key(session_id).encode()
        started = time.monotonic()
        *_, done = self._run([b"MULTI"], [b"HSET", key, b"#ttl", b"%d" % ms], [b"PEXPIRE", key, b"%d" % ms],
                             [b"EXEC"])
        if not isinstance(self._checked(done), list) or done != [1, 1]:
            raise BackendError(f"redis at {self.url.redacted()} did not open the session: {done!r}")
        assert self._listener is not None
        if self._notices is not None:
            self._notices.cancel()
        self._session = (session_id, ms)
        self.granted_ttl = ms / 1000
        self._notices = self._listener.watch(f"{self._channels}s:{session_id}".encode(), None,
                                             lambda: self._session_notice(session_id), wait=False)
        self._listener.watch_session(session_id, started + ms / 1000)
        return session_id

    def refresh_session(self) -> None:
        self._check_open()
        session = self._session
        if session is None:
            raise SessionExpired("there is no redis session")
        started = time.monotonic()
        (extended,) = self._run([b"PEXPIRE", self._session_key(session[0]).encode(), b"%d" % session[1]])
        if not self._checked(extended):
            raise SessionExpired("the redis session expired")
        if self._listener is not None:
            self._listener.watch_session(session[0], started + session[1] / 1000)

    def close_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if self._listener is not None:
            self._listener.watch_session(None, None)
        if self._notices is not None:
            self._notices.cancel()
            self._notices = None
        self._eval("end_session", [self._session_key(session[0])], [session[0]])

    def expire_session(self, session_id: str) -> bool:
        return bool(self._eval("end_session", [self._session_key(session_id)], [session_id]))

    def session_last_seen(self, session_id: str) -> float | None:
        key = self._session_key(session_id).encode()
        *_, done = self._run([b"MULTI"], [b"HGET", key, b"#ttl"], [b"PTTL", key], [b"EXEC"])
        both = self._checked(done)
        if not isinstance(both, list) or len(both) != 2:
            raise BackendError(f"redis at {self.url.redacted()} answered {both!r} to HGET and PTTL")
        ttl, left = both
        if not isinstance(ttl, bytes) or not isinstance(left, int) or left < 0:
            return None
        return time.time() - max(0, int(ttl) - left) / 1000

    def _session_left(self, session_id: str) -> float | None:
        """Seconds the session has left, None if it is gone (listener thread)."""
        (left,) = self._run([b"PTTL", self._session_key(session_id).encode()])
        left = int(self._checked(left))
        return None if left == -2 else max(left, 0) / 1000

    def _session_notice(self, session_id: str) -> None:
        """A notice that the session ended (or a resync after a reconnect): check it."""
        try:
            gone = self._session_left(session_id) is None
        except (BackendError, CoordinatorClosed):
            return  # the heartbeat will tell
        if gone:
            self._session_gone(session_id)

    def _session_gone(self, session_id: str) -> None:
        """The session ended without this object asking (evicted, or expired)."""
        session, dispatcher = self._session, self._dispatcher
        if session is not None and session[0] == session_id and dispatcher is not None:
            dispatcher.submit(self._session_lost)

    # -- keys -------------------------------------------------------------
    def _owner(self, ephemeral: bool) -> str:
        self._check_open()
        if not ephemeral:
            return ""
        session = self._session
        if session is None:
            raise SessionExpired("ephemeral keys need a live session")
        return session[0]

    def get(self, key: str) -> Entry | None:
        directory, leaf = split_key(key)
        raw = self._eval("get", [dir_key(directory, self._prefix)], [directory, leaf])
        return _entry(key.encode(), raw) if raw else None

    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        owner = self._owner(ephemeral)
        directory, leaf = split_key(key)
        raw = self._eval("create", [dir_key(directory, self._prefix)], [directory, leaf, owner, bytes(value)])
        return _entry(key.encode(), raw) if raw else None

    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        directory, leaf = split_key(key)
        raw = self._eval("cas", [dir_key(directory, self._prefix)], [directory, leaf, str(version), bytes(value)])
        return _entry(key.encode(), raw) if raw else None

    def delete(self, key: str, version: int | None = None) -> bool:
        directory, leaf = split_key(key)
        version_text = "" if version is None else str(version)
        return bool(self._eval("delete", [dir_key(directory, self._prefix)], [directory, leaf, version_text]))

    def list(self, prefix: str) -> list[Entry]:
        flat = self._eval("list", [], [prefix])
        return sorted((_entry(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)), key=lambda e: e.key)

    def names(self, directory: str) -> builtins.list[str]:
        """One script call: the directory hash's live leaves, without their
        values, in one string (one reply to parse, not one per member)."""
        if directory and not directory.endswith("/"):
            return super().names(directory)
        joined = self._eval("names", [dir_key(directory, self._prefix)], [directory])
        if not isinstance(joined, bytes):
            raise BackendError(f"redis at {self.url.redacted()} answered {joined!r:.80} to the names script")
        return sorted(joined.decode().split("/")[1:])

    def _sequential(self, prefix: str, value: bytes, ephemeral: bool, with_list: bool) -> builtins.list[Entry]:
        owner = self._owner(ephemeral)
        flat = self._eval("sequential", [dir_key(prefix, self._prefix)],
                          [prefix, owner, bytes(value), "1" if with_list else "0"])
        return [_entry(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._sequential(prefix, value, ephemeral, False)[0]

    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """One script call: create the entry and read the queue, atomically."""
        mine, *entries = self._sequential(prefix, value, True, True)
        return mine, sorted(entries, key=lambda e: e.key)

    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        self._check_open()
        if key == "" or key.endswith("/"):
            scope = (dir_key(key, self._prefix), key, "")
        else:
            directory, leaf = split_key(key)
            scope = (dir_key(directory, self._prefix), directory, leaf)
        listener = self._listener
        if listener is None:
            raise CoordinatorClosed("this redis backend is not connected")
        return listener.watch(f"{self._channels}{key}".encode(), scope, callback, wait=True)

    def _recheck(self, scope: tuple[str, str, str]) -> int:
        """Remove dead entries in ``scope``; ms until its first foreign owner expires, -1 if none."""
        session = self._session
        dkey, directory, leaf = scope
        return int(self._eval("recheck", [dkey], [directory, leaf, session[0] if session else ""]))



def _is_permission_error(reply: _RespError) -> bool:
    """An error reply saying the ACL user may not run that command, or touch
    that key or channel (Redis 7 words it differently inside a script)."""
    text = str(reply)
    return text.startswith("NOPERM") or "The user executing the script can't" in text

