"""The base of the ZooKeeper backend: its state, the kazoo clients (start,
replace, stop), deadlines, connection states (with the session timeout the
server granted), and kazoo errors mapped onto moot's. The sessions, watches
and keys are built on it (session.py, watches.py, backend.py)."""

from __future__ import annotations

import abc
import atexit
import contextlib
import contextvars
import functools
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    AuthFailedError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KeeperState, WatchedEvent
from kazoo.security import CREATOR_ALL_ACL, OPEN_ACL_UNSAFE

from moot import deadline
from moot.backends._support.lost import spent
from moot.backends._support.tls import option_names, tls_context
from moot.backends.base import Backend, CallbackWatch, Dispatcher
from moot.backends.zookeeper.connection import Result, _asked_ms, _Conn, _Connection, _kazoo_logger, _Session
from moot.backends.zookeeper.handler import _RealHandler, _SessionLock
from moot.backends.zookeeper.multiread import MultiReader
from moot.backends.zookeeper.tick import server_tick
from moot.backends.zookeeper.znodes import _SESSIONS
from moot.errors import (
    AuthenticationFailed,
    BackendError,
    ConnectionLost,
    CoordinatorClosed,
    InvalidURL,
    SessionExpired,
    TLSFailed,
)
from moot.realthreads import threading
from moot.realthreads import wait_until as _await
from moot.url import BackendURL

_DEFAULT_TTL = 10.0
_DEFAULT_TIMEOUT = 10.0
_CLOSE_FLOOR = 0.2  # seconds close() always grants the close request, even past a deadline

_FIX_CREDENTIALS = "fix user:password in the URL (zookeeper://user:password@host:port/chroot)"

log = logging.getLogger("moot.backends.zookeeper")

_P = ParamSpec("_P")
_R = TypeVar("_R")
#: When the primitive running on this thread started (its messages state the elapsed time).
_call_started: contextvars.ContextVar[float | None] = contextvars.ContextVar("moot_zookeeper_call", default=None)


_B = TypeVar("_B", bound="_Client")
_Method = Callable[Concatenate[_B, _P], _R]


def _bounded(method: _Method[_B, _P, _R]) -> _Method[_B, _P, _R]:
    """Run a primitive under its deadline: the caller's (:mod:`moot.deadline`)
    cut to the backend's ``timeout`` for the whole call, however many round
    trips it makes. A backend inherited through fork() refuses at once."""

    def call(self: _B, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._forked:
            raise ConnectionLost("this ZooKeeper backend was inherited through fork(): its connection and "
                                 "session belong to the parent process; connect again in this one")
        if _call_started.get() is not None:  # a primitive called by another: already bounded
            return method(self, *args, **kwargs)
        started = time.monotonic()
        token = _call_started.set(started)
        try:
            with deadline.bounded(started + self._timeout):
                return method(self, *args, **kwargs)
        finally:
            _call_started.reset(token)

    return functools.update_wrapper(call, method)  # type: ignore[return-value]


def _handshake_timeout(ttl: float) -> float:
    """The most a TLS handshake may take: kazoo would allow the whole session
    timeout, but a serving server answers in milliseconds (as for the
    Connect request, see _Connection._invoke)."""
    return max(2.0, ttl / 5)


def _elapsed() -> str:
    started = _call_started.get()
    return "" if started is None else f" {spent(started)}"



class _Client(Backend):
    """The state and the kazoo clients of a ZooKeeper backend."""

    OPTIONS = option_names({})  # the TLS options: tls, ca_cert, cert, key, verify

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        path = url.path.rstrip("/")
        if path and any(part in ("", ".", "..") for part in path.split("/")[1:]):
            raise InvalidURL(f"bad chroot {url.path!r} in {url.redacted()}; write /name[/name...]")
        self._root = path or "/moot"
        self._sessions = f"{self._root}/{_SESSIONS}"
        self._hosts = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            for host, port in (url.host_port(2181, i) for i in range(max(1, len(url.hosts))))
        )
        self._auth = [("digest", f"{url.username}:{url.password or ''}")] if url.username is not None else []
        self._tls = tls_context(options, default=False, aliases={}, where=url.redacted())
        self._acl = CREATOR_ALL_ACL if self._auth else OPEN_ACL_UNSAFE
        self._timeout = _DEFAULT_TIMEOUT
        self._lock = threading.Lock()  # watch tables, caches, the current client
        self._session_lock = _SessionLock()  # serializes client and session changes
        self._conn: _Conn | None = None
        self._clients: set[KazooClient] = set()  # every client not yet stopped (forgotten after fork)
        self._session: _Session | None = None
        self._watches: dict[str, set[CallbackWatch]] = {}
        self._own: dict[str, tuple[int, int, bytes]] = {}  # path -> (mzxid, version, header) of my sequential keys
        self._orphans: dict[bytes, str] = {}  # tag -> parent path of a creation with an unknown outcome
        self._reads = MultiReader(url.redacted())  # many znodes in one request, or one by one
        self._listed: dict[str, tuple[str, ...]] = {}  # parent path -> names its last listing found (a guess)
        self._made: dict[str, None] = {}  # paths of directories known to exist (a guess; see _send_parents)
        self._warned: set[tuple[float, float]] = set()  # (asked, granted) session timeouts already logged
        self._tick: float | None = None  # the server's tickTime as estimated (tick.py), once known
        self._closed = False
        self._forked = False
        self._dispatcher: Dispatcher | None = None

    def connect(self, timeout: float) -> None:
        self._timeout = timeout
        self._connect()

    @_bounded
    def _connect(self) -> None:
        self._dispatcher = Dispatcher("moot-zookeeper-watch")
        try:
            ttl = float(str(self.options.get("ttl", _DEFAULT_TTL)))
        except ValueError:
            ttl = _DEFAULT_TTL
        with self._serialized():
            conn = self._replace(ttl)
        self._wait(conn.zk.ensure_path_async(self._sessions, self._acl))
        # exists() checks no ACL: a read does, so an identity the chroot's
        # ACLs leave out is refused here (AuthenticationFailed), not later
        self._wait(conn.zk.get_async(self._sessions))

    def close(self) -> None:
        if self._forked:
            self._closed = True
            return
        budget = max(_CLOSE_FLOOR, self._budget())
        locked = self._session_lock.acquire(timeout=budget)
        try:
            if self._closed:
                return
            self._closed = True
            with self._lock:
                conn, self._conn = self._conn, None
                self._session = None
                self._watches.clear()
        finally:
            if locked:
                self._session_lock.release()
        if conn is not None:
            self._stop(conn.zk, max(_CLOSE_FLOOR, self._budget()))
        if self._dispatcher is not None:
            self._dispatcher.close()

    def forget_after_fork(self) -> None:
        """Drop the clients inherited from the parent: close this process's
        copies of their sockets with plain ``os.close`` (no close request,
        no shutdown, no ping), so the parent's connection and session go on
        as if nothing happened. Every later call raises ConnectionLost at once."""
        self._forked = True
        self._closed = True
        # The parent's threads may have held these at fork time: never wait on them here.
        self._lock = threading.Lock()
        self._session_lock = _SessionLock()
        clients = list(self._clients)
        if self._conn is not None:
            clients.append(self._conn.zk)
        for zk in clients:
            connection = zk._connection
            if isinstance(connection, _Connection):
                connection.forget()
            with contextlib.suppress(Exception):
                atexit.unregister(zk.handler.stop)  # kazoo's exit hook would join threads this process lacks
        self._clients = set()
        self._conn = None
        self._session = None
        self._watches = {}
        self._dispatcher = None  # its thread stayed in the parent

    @_bounded
    def ping(self) -> str:
        conn = self._client()
        self._wait(conn.zk.exists_async(self._root))
        first = self._srvr(conn) or "ZooKeeper"  # 4lw commands may be disabled: the round trip answered anyway
        return f"{first} at {self._hosts}{self._root}"

    def _srvr(self, conn: _Conn) -> str | None:
        """The first line of the ``srvr`` answer of the server ``conn`` talks to, within the deadline."""
        try:
            sock = conn.handler._socket
            peer = sock.getpeername()[:2] if sock is not None else None
            if peer is None:
                return None
            with contextlib.ExitStack() as stack:
                probe = stack.enter_context(socket.create_connection(peer, timeout=self._left()))
                if self._tls is not None:
                    probe = stack.enter_context(self._tls.wrap_socket(probe, server_hostname=conn.handler.host))
                probe.sendall(b"srvr")
                answer = b""
                while chunk := probe.recv(4096):
                    answer += chunk
                    probe.settimeout(self._left())
        except (OSError, ConnectionLost):
            return None
        lines = answer.decode("utf-8", "replace").splitlines()
        return lines[0] if lines else None

    # -- deadlines --------------------------------------------------------
    def _left(self) -> float:
        """Seconds the current blocking step may take; ConnectionLost once the
        call's deadline has passed."""
        try:
            return deadline.remaining(self._timeout)
        except ConnectionLost:
            raise ConnectionLost(f"ZooKeeper at {self.url.redacted()}: no answer{_elapsed()}, "
                                 "the call's deadline passed") from None

    def _budget(self) -> float:
        """Like :meth:`_left`, but 0 instead of raising (for what never raises)."""
        try:
            return deadline.remaining(self._timeout)
        except ConnectionLost:
            return 0.0

    @contextlib.contextmanager
    def _serialized(self) -> Iterator[None]:
        """Hold the session lock, waiting for it no longer than the deadline."""
        if not self._session_lock.acquire(timeout=self._left()):
            raise ConnectionLost(f"ZooKeeper at {self.url.redacted()}: still replacing its connection{_elapsed()}")
        try:
            yield
        finally:
            self._session_lock.release()

    # -- clients ----------------------------------------------------------
    def _asked(self, ttl: float) -> float:
        """The session timeout to ask for a session of ``ttl``: one tick of
        the server less, so that it ends within the TTL (see tick.py)."""
        if self._tick is None:  # until a host tells it: each new connection asks
            hosts = [self.url.host_port(2181, i) for i in range(max(1, len(self.url.hosts)))]
            self._tick = server_tick(hosts, self._left, self._tls)
        return ttl - self._tick if self._tick is not None and ttl > self._tick else ttl

    def _new_client(self, ttl: float, client_id: tuple[int, bytes] | None = None) -> KazooClient:
        """A kazoo client, not started, whose connection handler is a :class:`_Connection`."""
        zk = KazooClient(
            hosts=self._hosts,
            timeout=ttl,
            client_id=client_id,
            auth_data=self._auth,
            default_acl=self._acl,
            logger=_kazoo_logger(self._auth),
            # the handler makes the TLS connections with moot's context; kazoo's TLS options stay unused
            handler=_RealHandler(self._tls, handshake_timeout=_handshake_timeout(ttl)),
            use_ssl=self._tls is not None,
            connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": min(1.0, ttl / 3),
                              "sleep_func": _RealHandler.sleep_func},
        )
        # kazoo would ask int(ttl * 1000) ms: a hair less than the TTL, which the server grants
        zk._session_timeout = _asked_ms(self._asked(ttl))
        zk._connection = _Connection(zk)
        return zk

    def _run(self, zk: KazooClient) -> None:
        """Start ``zk`` and wait until it is connected, within the deadline.
        Fails at once when every host refused the connection or the server
        refused the credentials; on failure the client is stopped."""
        handler: _Connection = zk._connection
        with self._lock:
            self._clients.add(zk)
        started = _call_started.get() or time.monotonic()  # messages state the whole call's time
        zk.start_async()
        problem: BackendError | AuthenticationFailed | TLSFailed | None = None
        while not zk.connected:
            try:
                step = min(0.02, self._left())
            except ConnectionLost:
                problem = ConnectionLost(f"ZooKeeper at {self.url.redacted()} did not answer: gave up "
                                         f"{spent(started)}")
                break
            if zk.client_state == KeeperState.AUTH_FAILED:
                problem = AuthenticationFailed(f"ZooKeeper at {self.url.redacted()} refused the credentials; "
                                               f"{_FIX_CREDENTIALS}")
                break
            if handler.tls_failure is not None:  # every host failed the handshake (or refused) for good
                problem = handler.tls_failure
                break
            if handler.unresolved_rounds:
                problem = ConnectionLost(f"no host of {self.url.redacted()} resolves to an address; gave up "
                                         f"{spent(started)}")
                break
            if handler.refused_rounds:
                problem = ConnectionLost(f"ZooKeeper at {self.url.redacted()} refused the connection (nothing "
                                         f"listens on {self._hosts}?); gave up "
                                         f"{spent(started)}")
                break
            _await(zk._live.is_set, zk._live.wait, step)
        if problem is not None:
            self._stop(zk, 0.0)
            raise problem

    def _start(self, ttl: float) -> _Conn:
        """A new connected client with session timeout ``ttl`` (not yet current)."""
        zk = self._new_client(ttl)
        conn = _Conn(zk, ttl, zk._session_timeout)
        conn.watcher = lambda event: self._on_event(conn, event)
        zk.add_listener(lambda state: self._on_state(conn, state))
        self._run(zk)
        return conn

    def _replace(self, ttl: float) -> _Conn:
        """Make a new client current (caller holds the session lock); the old
        one's session ends. Every watch is re-armed on the new one and called."""
        conn = self._start(ttl)
        with self._lock:
            closed = self._closed
            if not closed:
                old, self._conn = self._conn, conn
        if closed:  # closed meanwhile (close() waits for the session lock only so long)
            self._stop(conn.zk, 0.0)
            raise CoordinatorClosed("this ZooKeeper backend is closed")
        if old is not None:
            self._stop(old.zk, self._budget())
        self._rearm_all(conn)
        return conn

    def _stop(self, zk: KazooClient, timeout: float) -> None:
        """Stop ``zk``: a close request ends its session at once if the server
        answers within ``timeout``; past that the connection is cut, and the
        rest of kazoo's shutdown finishes on a daemon thread (the server then
        ends the session when its timeout runs out)."""
        done = threading.Event()

        def stop() -> None:
            try:
                zk.stop()
                zk.close()
            except Exception:  # closing is best effort; the server ends the session anyway
                pass
            finally:
                with self._lock:
                    self._clients.discard(zk)
                done.set()

        threading.Thread(target=stop, name="moot-zookeeper-stop", daemon=True).start()
        if not _await(done.is_set, done.wait, timeout):
            # set first by stop(): kazoo's thread then does not connect again
            _await(zk._stopped.is_set, zk._stopped.wait, 1.0)
            zk._connection.cut()

    def _client(self) -> _Conn:
        """The current client once connected: requests are never left queued
        inside kazoo while it reconnects (ConnectionLost at the deadline)."""
        conn = self._conn
        if conn is None:
            with self._serialized():
                if self._closed:
                    raise CoordinatorClosed("this ZooKeeper backend is closed")
                conn = self._conn or self._replace(self._session.ttl if self._session else _DEFAULT_TTL)
        if not _await(conn.live.is_set, conn.live.wait, self._left()):
            raise ConnectionLost(f"disconnected from ZooKeeper at {self.url.redacted()}; "
                                 f"still reconnecting{_elapsed()}")
        return conn

    def _on_state(self, conn: _Conn, state: str) -> None:
        """kazoo's state listener (its connection thread: must not block)."""
        if state != KazooState.CONNECTED:
            conn.live.clear()
            if state == KazooState.LOST:
                with self._lock:
                    session = self._session if conn is self._conn else None
                    lost = session is not None and not session.expired
                    if session is not None:
                        session.expired = True
                if lost:
                    self._submit(self._session_lost)
            return
        with self._lock:
            current = conn is self._conn
            conn.children.clear()  # kazoo dropped every watch when it disconnected
            conn.absent.clear()
            session = self._session if current else None
        if session is not None and not session.expired and conn.session() == session.sid:
            self._grant(session, conn)  # a reconnection renegotiates the timeout
            self._watch_record(conn, session)  # kazoo dropped it with the connection
        conn.live.set()
        if current:
            self._rearm_all(conn)

    def _grant(self, session: _Session, conn: _Conn) -> None:
        """Record the session timeout the server granted for ``session``."""
        granted = conn.granted()
        if granted is None:
            return
        self.granted_ttl = granted
        if conn.handler.granted_ms != conn.asked_ms and (session.ttl, granted) not in self._warned:
            self._warned.add((session.ttl, granted))
            log.warning("ZooKeeper at %s granted a session timeout of %gs instead of the %gs asked for a TTL "
                        "of %gs (its minSessionTimeout/maxSessionTimeout); sessions are counted with %gs",
                        self.url.redacted(), granted, conn.asked_ms / 1000, session.ttl,
                        min(granted, session.ttl))

    def _submit(self, fn: Callable[[], None]) -> None:
        if self._dispatcher is not None:
            self._dispatcher.submit(fn)

    def _wait(self, result: Result, *expected: type[Exception], session: bool = False) -> Any:
        """The value of a kazoo call, waited for until the deadline;
        ``expected`` kazoo errors are raised as is, the others become moot errors."""
        if not _await(result.ready, result.wait, self._left()):
            raise ConnectionLost(f"no answer from ZooKeeper at {self.url.redacted()}{_elapsed()}")
        try:
            return result.get(block=False)
        except expected:
            raise
        except KazooTimeoutError:
            raise ConnectionLost(f"no answer from ZooKeeper at {self.url.redacted()}{_elapsed()}") from None
        except (ConnectionLoss, ConnectionClosedError):
            raise ConnectionLost(f"lost the connection to ZooKeeper at {self.url.redacted()}{_elapsed()}") from None
        except SessionExpiredError:
            if session:
                raise SessionExpired("the ZooKeeper session expired") from None
            raise ConnectionLost(f"ZooKeeper at {self.url.redacted()}: session being replaced") from None
        except NoAuthError:
            who = "no credentials" if self.url.username is None else f"user {self.url.username!r}"
            raise AuthenticationFailed(
                f"ZooKeeper at {self.url.redacted()} denied access to {who}: moot's znodes there were made "
                f"by another identity (digest user:password): {_FIX_CREDENTIALS} to theirs, or the ACLs of the "
                "chroot") from None
        except AuthFailedError:
            raise AuthenticationFailed(f"ZooKeeper at {self.url.redacted()} refused the credentials; "
                                       f"{_FIX_CREDENTIALS}") from None
        except KazooException as exc:
            raise BackendError(f"ZooKeeper error {type(exc).__name__}") from None

    def _record(self, session_id: str) -> str:
        return f"{self._sessions}/{session_id}"

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}" if key else self._root

    def _dir(self, prefix: str) -> str:
        return self._path(prefix.rstrip("/"))

    def _key(self, path: str) -> str | None:
        if path == self._root:
            return ""
        if path.startswith(self._root + "/"):
            return path[len(self._root) + 1:]
        return None

    # -- hooks defined in session.py and watches.py -----------------------
    @abc.abstractmethod
    def _rearm_all(self, conn: _Conn) -> None:
        """Arm every watch on ``conn``, then call every callback once."""

    @abc.abstractmethod
    def _on_event(self, conn: _Conn, event: WatchedEvent) -> None:
        """A one-shot watch fired (kazoo's callback thread: must not block)."""

    @abc.abstractmethod
    def _watch_record(self, conn: _Conn, session: _Session) -> Result:
        """Watch the session's record (see session.py)."""

    @abc.abstractmethod
    def _remove_orphans(self, conn: _Conn) -> None:
        """Remove the sequential znodes whose creation reply was lost."""
