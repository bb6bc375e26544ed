"""``zookeeper://host:port[,host:port...][/chroot]`` (alias ``kazoo://``): ZooKeeper through kazoo.

Keys live under the URL's chroot (default ``/moot``): key ``a/b`` is znode
``/moot/a/b``. ``user:password@`` in the URL authenticates with ZooKeeper's
``digest`` scheme and creates every znode readable and writable by that
identity only. While the connection is down kazoo reconnects by itself.

Deadlines
    Every primitive, whatever round trips it makes (waiting for a
    reconnection included), returns or raises within the caller's deadline
    (:mod:`moot.deadline`), itself at most the ``timeout`` option (default
    10 s), plus a few milliseconds; ConnectionLost then states the time it
    took. ``connect`` fails at once, saying so, when every host refuses the
    connection. ``close`` grants the close request what is left of the
    deadline (at least 0.2 s), then cuts the connection; kazoo's own shutdown
    finishes on a daemon thread, and the server ends the session when its
    timeout runs out.

Sessions
    A moot session is a native ZooKeeper session whose timeout is the TTL;
    kazoo pings the server by itself. The server bounds session timeouts to
    [``minSessionTimeout``, ``maxSessionTimeout``], by default 2 and 20
    ``tickTime`` (4 s to 40 s with the usual 2 s tick), and expires sessions
    on tick boundaries: for TTLs of 1 s, run the server with ``tickTime=250``
    (or ``minSessionTimeout=500``). What the server granted is read from its
    answer to each connection (kazoo keeps it to itself) into
    ``granted_ttl``, logged once as a warning when it differs from the TTL.
    ``refresh_session`` sends a ``sync`` and an ``exists`` of the session's
    record together and waits for both: the server renews the session when
    it receives them, after the call started, and the ``sync`` is answered
    only once the server has heard from the ensemble's leader, so a server
    cut off from the leader (which may expire the session meanwhile) fails
    the refresh instead of answering from its stale copy. One window is
    left on an ensemble: a follower passes its clients' activity to the
    leader with its next ping answer (every ``tickTime / 2``), so a follower
    cut off from the leader in that instant, right after answering, leaves
    the leader counting from the renewal before. Session ids are the ZooKeeper session ids
    in hex; every live session also has an ephemeral record
    ``<chroot>/.sessions/<id>`` holding its password, so that
    ``expire_session`` can end any session for real: it attaches a second
    connection to that session and closes it, which the server treats like an
    expiry (ephemeral znodes go, watches fire, the owner learns it on its
    next contact). The tradeoff: any client that can read the chroot can
    attach to (hence end, or act as) any moot session; restrict the chroot
    with credentials when the ensemble is shared with untrusted clients.
    When kazoo reports the session LOST, the session listener is called.

Keys and versions
    A key's znode data is one header byte and the value; znodes created as
    mere parents (empty data) are not keys, and are never deleted, so the
    sequence counters they carry survive. A key's version is its ``mzxid``
    (changes on every write, never reused), its owner the ``ephemeralOwner``
    in hex. Deletes and versioned writes read the znode first (to map the
    mzxid onto the znode version, and never to delete a mere parent): two
    round trips, except on the sequential keys this backend created, whose
    names are never reused: one round trip. ``enqueue`` sends its creation
    and its listing together: one round trip on an empty queue. ``list``
    asks for the children of a level's znodes together, then reads all their
    data in ONE multi-read request (ZooKeeper 3.6+; kazoo 2.11 has no call
    for it, and sends one request per znode at ~0.1 ms of Python each: 1,000
    members took 140 ms, now 6 ms). A server without multi-read answers
    UNIMPLEMENTED and drops the connection once (kazoo reconnects, the
    session lives); the backend then reads one znode per request.

Sequence
    Sequential keys are ZooKeeper sequential znodes (names are the parent's
    10-digit counter, so their key order is their creation order); their
    ``seq`` is their ``czxid``, the cluster's transaction id of the creation:
    strictly increasing for ever, even if someone deletes the parent znodes.
    ZooKeeper's per-parent counter is a signed 32-bit int: after 2**31
    creations and deletions under one prefix, names stop sorting in creation
    order. Each sequential znode carries a random tag, so a creation whose
    reply was lost with the connection is found and removed once connected
    again: a lost reply never leaves a phantom waiter in a queue.

Watch
    kazoo 2.11 has no persistent watches (ZooKeeper 3.6 ``addWatch``), so
    one-shot watches are re-armed before callbacks run (except that a watched
    key's deletion calls back at once, and again if the key is back once
    re-armed: a lock handoff waits for no extra round trip). A key watch is a data
    watch on the znode, or, while the key is absent, a child watch on its
    parent (so watching deleted sequential keys leaks no server watch). A
    prefix watch is a child watch on the parent plus a data watch on each
    child. After a reconnection every watch is re-armed and called once.

Values
    Values over :data:`moot.backends.base.MAX_VALUE_BYTES` raise
    InvalidArgument before any I/O: the server drops the connection of a
    request over its frame limit (``jute.maxbuffer``, 1 MiB), which would be
    retried for ever. For the same reason a multi-read carries at most
    256 KiB of paths.

Fork
    ``forget_after_fork`` closes the child's copies of the sockets with
    ``os.close`` only; kazoo's threads stayed in the parent. The parent's
    connection and session carry on untouched; in the child every primitive
    raises ConnectionLost at once.

Green threads
    Under ``eventlet.monkey_patch()`` kazoo is given a handler of its own
    made only of what the OS provides: real threads, locks, events, queues
    and result conditions, the real socket module, ``poll`` and
    ``time.sleep`` (eventlet's saved originals). kazoo imported after the
    patching would otherwise run its connection thread and results green,
    and the coordinator's heartbeat, a real OS thread, could not wait on
    them ("Cannot switch to a different thread"): the session would be
    lost whenever the application's green threads keep the CPU. So kazoo
    behaves as a blocking library on threads of its own, and an application
    green thread never blocks eventlet's hub on it: it only sends requests,
    and waits for an answer (or for the connection, or for the lock that
    serializes session changes, whose owner is the green thread itself) in
    short ``time.sleep`` pauses, which let the other green threads run. Real
    threads wait as usual. Long waits (a lock's turn) happen in moot's
    recipes, on :func:`moot.realthreads.Event`.

Threads: kazoo's connection thread and two callback workers, plus one
dispatcher thread for watch callbacks (and, briefly, one per client
stopped); all real OS threads, also under eventlet.
"""

from __future__ import annotations

import atexit
import builtins
import collections
import contextlib
import contextvars
import functools
import importlib
import logging
import math
import os
import random
import re
import socket
import struct
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    EXCEPTIONS,
    AuthFailedError,
    BadVersionError,
    ConnectionClosedError,
    ConnectionDropped,
    ConnectionLoss,
    KazooException,
    MarshallingError,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    SessionExpiredError,
    UnimplementedError,
)
from kazoo.handlers import utils as kazoo_utils
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import (
    Connect,
    GetData,
    int_struct,
    multiheader_struct,
    read_buffer,
    stat_struct,
)
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent, ZnodeStat
from kazoo.security import CREATOR_ALL_ACL, OPEN_ACL_UNSAFE

from moot import deadline
from moot.backends.base import MAX_VALUE_BYTES, Backend, CallbackWatch, Dispatcher, Entry, Watch
from moot.errors import (
    BackendError,
    ConnectionLost,
    CoordinatorClosed,
    InvalidArgument,
    InvalidURL,
    SessionExpired,
)
from moot.realthreads import select, threading
from moot.url import BackendURL

_KEY = b"\x01"  # data header of a key
_SEQ = b"\x02"  # data header of a sequential key, followed by a random tag
_TAG = 8
_SESSIONS = ".sessions"  # not a key segment, so never listed as keys
_SEGMENT = re.compile(r"[A-Za-z0-9_%-]+\Z")
_DEFAULT_TTL = 10.0
_DEFAULT_TIMEOUT = 10.0
_U64 = (1 << 64) - 1
_MULTI_HEADER = multiheader_struct
_MULTIREAD_BATCH = 1000  # reads per multi-read request
#: Bytes of paths per multi-read request: the server drops the connection of
#: any request over its jute.maxbuffer (1 MiB by default), so long names in a
#: big directory must be split, or that listing would fail for ever.
_MULTIREAD_BYTES = 256 * 1024
_CLOSE_FLOOR = 0.2  # seconds close() always grants the close request, even past a deadline

log = logging.getLogger("moot.backends.zookeeper")

_P = ParamSpec("_P")
_R = TypeVar("_R")
#: When the primitive running on this thread started (its messages state the elapsed time).
_call_started: contextvars.ContextVar[float | None] = contextvars.ContextVar("moot_zookeeper_call", default=None)


_Method = Callable[Concatenate["ZooKeeperBackend", _P], _R]


def _bounded(method: _Method[_P, _R]) -> _Method[_P, _R]:
    """Run a primitive under its deadline: the caller's (:mod:`moot.deadline`)
    cut to the backend's ``timeout`` for the whole call, however many round
    trips it makes. A backend inherited through fork() refuses at once."""

    def call(self: ZooKeeperBackend, *args: _P.args, **kwargs: _P.kwargs) -> _R:
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


def _elapsed() -> str:
    started = _call_started.get()
    return "" if started is None else f" after {time.monotonic() - started:.2f}s"


# -- real threads under eventlet ----------------------------------------------


def _original(name: str) -> types.ModuleType:
    """The module ``name`` as the OS provides it: eventlet's saved original
    once eventlet has monkey-patched it (as :mod:`moot.realthreads` does)."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched(name):
        original: types.ModuleType = patcher.original(name)
        return original
    return importlib.import_module(name)


_real_socket = _original("socket")
_real_time = _original("time")
_FIRST_PAUSE = 0.0002  # a green waiter's first pause (a round trip on the loopback takes ~0.2 ms)
_LONGEST_PAUSE = 0.01


def _green_caller() -> bool:
    """True when blocking this OS thread would stop green threads: eventlet
    has monkey-patched the process and runs a hub in this thread. The
    heartbeat and kazoo's threads run no hub: they block as usual."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is None or not patcher.is_monkey_patched("thread"):
        return False
    local = getattr(sys.modules.get("eventlet.hubs"), "_threadlocal", None)
    return local is None or hasattr(local, "hub")


def _await(ready: Callable[[], bool], block: Callable[[float], object], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until ``ready()``; True if it is. A
    real thread blocks in ``block(timeout)`` (a real event's or condition's
    wait); a green thread pauses with ``time.sleep`` (eventlet's there), so
    the application's other green threads run meanwhile."""
    if ready():
        return True
    if not _green_caller():
        block(timeout)
        return ready()
    until = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while not ready():
        left = until - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, _LONGEST_PAUSE)
    return True


def _current() -> object:
    """Who runs this code: the green thread under eventlet, else the OS thread."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        greenlet = importlib.import_module("greenlet")
        return greenlet.getcurrent()
    return threading.get_ident()


class _SessionLock:
    """A reentrant lock held across round trips (connection and session
    changes), by real and green threads alike. Its owner is the current green
    thread under eventlet: a real ``RLock`` would let every green thread of
    one OS thread in at once. A green thread waits for it without blocking
    eventlet's hub."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: object | None = None
        self._depth = 0

    def acquire(self, timeout: float) -> bool:
        me = _current()
        green = _green_caller()
        until = time.monotonic() + timeout
        pause = _FIRST_PAUSE
        with self._cond:
            while self._owner is not None and self._owner != me:
                left = until - time.monotonic()
                if left <= 0:
                    return False
                if not green:
                    self._cond.wait(left)
                    continue
                self._cond.release()  # never held while this green thread yields
                try:
                    time.sleep(min(pause, left))
                finally:
                    self._cond.acquire()
                pause = min(pause * 2, _LONGEST_PAUSE)
            self._owner = me
            self._depth += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify()


class _RealQueue:
    """kazoo's callback queue on a real lock (``queue.Queue`` is green under eventlet)."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def get(self) -> Any:
        with self._ready:
            while not self._items:
                self._ready.wait()
            return self._items.popleft()

    def task_done(self) -> None:
        pass


class _RealHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler made only of what the OS provides: real
    threads, locks, events, queues and result conditions, the real socket
    module and ``poll``, and the real ``time.sleep``, even in a process that
    eventlet has monkey-patched (see "Green threads" in the module docstring)."""

    name = "moot_real_threads"
    queue_impl = _RealQueue
    sleep_func = staticmethod(_real_time.sleep)

    def __init__(self) -> None:
        super().__init__()
        self._state_change = threading.Lock()  # kazoo made it from its (maybe green) threading

    def select(self, rlist: list[Any], wlist: list[Any], xlist: list[Any],
               timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
        poller = select.poll()
        masks: dict[int, int] = {}
        for objects, mask in ((rlist, select.POLLIN), (wlist, select.POLLOUT)):
            for obj in objects:
                fd = kazoo_utils.fileobj_to_fd(obj)
                masks[fd] = masks.get(fd, 0) | mask
        for fd, mask in masks.items():
            poller.register(fd, mask)
        events = dict(poller.poll(None if timeout is None else math.ceil(max(0.0, timeout) * 1000)))
        failed = select.POLLERR | select.POLLHUP | select.POLLNVAL  # the next recv/send reports it
        readable = [obj for obj in rlist
                    if events.get(kazoo_utils.fileobj_to_fd(obj), 0) & (select.POLLIN | failed)]
        writable = [obj for obj in wlist
                    if events.get(kazoo_utils.fileobj_to_fd(obj), 0) & (select.POLLOUT | failed)]
        return readable, writable, []

    def socket(self) -> Any:
        return kazoo_utils.create_tcp_socket(_real_socket)

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        return kazoo_utils.create_tcp_connection(_real_socket, *args, **kwargs)

    def create_socket_pair(self) -> Any:
        return kazoo_utils.create_socket_pair(_real_socket)

    def event_object(self) -> threading.Event:
        return threading.Event()

    def lock_object(self) -> Any:
        return threading.Lock()

    def rlock_object(self) -> Any:
        return threading.RLock()

    def async_result(self) -> Any:
        return kazoo_utils.AsyncResult(self, threading.Condition, KazooTimeoutError)

    def spawn(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> threading.Thread:
        thread = threading.Thread(target=func, args=args, kwargs=kwargs, daemon=True)
        thread.start()
        return thread


class _Connection(ConnectionHandler):  # type: ignore[misc]
    """kazoo's connection handler, noting what kazoo keeps to itself: the
    session timeout the server granted, and whether every host refused."""

    _socket: socket.socket | None
    _read_sock: socket.socket | None
    _write_sock: socket.socket | None

    def __init__(self, client: KazooClient):
        super().__init__(client, client._conn_retry.copy(), logger=client.logger)
        #: the session timeout (ms) the server granted at the last connection
        self.granted_ms: int | None = None
        #: rounds over all the hosts in which every connection was refused
        self.refused_rounds = 0
        #: rounds in which no host name resolved
        self.unresolved_rounds = 0
        self._round: list[bool] = []

    def _connect_loop(self, retry: Any) -> Any:
        self._round = []
        try:
            return super()._connect_loop(retry)
        finally:
            if self._round and all(self._round):
                self.refused_rounds += 1

    def _expand_client_hosts(self) -> list[tuple[str, str, int]]:
        """(host, address, port) of every address of every host, resolved
        with the OS's resolver (eventlet's green one would need a hub on
        this thread)."""
        addresses = []
        for host, port in self.client.hosts:
            try:
                found = _real_socket.getaddrinfo(host.strip(), port, 0, 0, _real_socket.IPPROTO_TCP)
            except OSError as exc:
                self.logger.warning("Cannot resolve %s: %s", host, exc)
                continue
            addresses += [(host.strip(), info[4][0], info[4][1]) for info in found]
        if self.client.randomize_hosts:
            random.shuffle(addresses)
        if not addresses:
            self.unresolved_rounds += 1
        return addresses

    def _connect(self, host: str, hostip: str, port: int) -> Any:
        try:
            answer = super()._connect(host, hostip, port)
        except ConnectionDropped as exc:  # kazoo's wrapper of the socket error
            self._round.append(isinstance(exc.__context__, ConnectionRefusedError))
            raise
        except BaseException:
            self._round.append(False)
            raise
        self._round.append(False)
        return answer

    def _invoke(self, timeout: float, request: Any, xid: int | None = None) -> Any:
        if isinstance(request, Connect):
            # kazoo waits up to the whole session timeout for this answer; a
            # server that accepted the connection but does not serve yet (one
            # starting up, say) would hold the reconnection that long, while
            # the session may expire. A serving server answers in milliseconds.
            timeout = min(timeout, max(2.0, self.client._session_timeout / 5000))
        answer = super()._invoke(timeout, request, xid)
        if isinstance(request, Connect):  # read before kazoo reports CONNECTED
            self.granted_ms = answer[0].time_out
        return answer

    def cut(self) -> None:
        """Break the TCP connection now (wakes kazoo's thread wherever it waits on it)."""
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def forget(self) -> None:
        """Close this process's copies of the connection's file descriptors,
        without any I/O on them (after fork: the parent keeps its connection)."""
        for sock in (self._socket, self._read_sock, self._write_sock):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                fd = sock.detach()  # the socket object forgets its fd: never closed twice
                if fd >= 0:
                    os.close(fd)
        self._socket = self._read_sock = self._write_sock = None


class _Redact(logging.Filter):
    """Hides the digest credentials that kazoo logs (at DEBUG) when it logs in."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, ()
        return True


_redact = _Redact()
#: kazoo's own messages go here, with every credential moot gave it hidden.
_kazoo_log = logging.getLogger("moot.backends.zookeeper.kazoo")
_kazoo_log.addFilter(_redact)


def _kazoo_logger(auth: list[tuple[str, str]]) -> logging.Logger:
    for _scheme, credential in auth:
        _redact.secrets.add(credential)
        password = credential.partition(":")[2]
        if password:
            _redact.secrets.add(password)
    return _kazoo_log

Result = Any  # a kazoo IAsyncResult


def _asked_ms(ttl: float) -> int:
    """The session timeout to ask for: the TTL rounded up to a millisecond."""
    return max(1, math.ceil(ttl * 1000 - 1e-6))


def _hex(session: int) -> str:
    return format(session & _U64, "x")


def _session_int(text: str) -> int | None:
    """The signed 64-bit session id kazoo expects, from its hex form."""
    try:
        value = int(text, 16)
    except ValueError:
        return None
    if not 0 <= value <= _U64:
        return None
    return value - (1 << 64) if value >= 1 << 63 else value


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _is_prefix(key: str) -> bool:
    return not key or key.endswith("/")


def _as_prefix(key: str) -> str:
    """The prefix naming the keys directly under ``key`` ("" for the root)."""
    return key + "/" if key else ""


def _value(value: bytes) -> bytes:
    """``value`` as bytes, refused before any I/O if no server could store it:
    the server drops the connection of a request over its frame limit, which
    would cost a retry loop or the session."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgument(f"values are bytes, not {type(value).__name__}")
    data = bytes(value)
    if len(data) > MAX_VALUE_BYTES:
        raise InvalidArgument(f"a value of {len(data)} bytes is over moot's limit of {MAX_VALUE_BYTES} bytes; "
                              "store large data elsewhere and keep a reference to it here")
    return data


def _header(data: bytes) -> bytes:
    return data[:1] if data[:1] == _KEY else data[: 1 + _TAG]


def _split(data: bytes) -> tuple[bytes, bool] | None:
    """(value, sequential) of a key's znode data; None for a mere parent znode."""
    if data[:1] == _KEY:
        return data[1:], False
    if data[:1] == _SEQ and len(data) > _TAG:
        return data[1 + _TAG:], True
    return None


class _MultiRead:
    """ZooKeeper's multi-read request (opcode 22, ZooKeeper 3.6+): the data
    and stat of many znodes in one round trip; kazoo 2.11 has no call for it.
    Its answer lists, per path, ``(data, stat)`` or None (no such znode)."""

    type = 22

    def __init__(self, paths: list[str]):
        self.paths = paths

    def serialize(self) -> bytes:
        parts = [_MULTI_HEADER.pack(GetData.type, False, -1) + bytes(GetData(path, None).serialize())
                 for path in self.paths]
        end: bytes = _MULTI_HEADER.pack(-1, True, -1)
        return b"".join(parts) + end

    def deserialize(self, data: bytes, offset: int) -> list[tuple[bytes, ZnodeStat] | None]:
        answers: list[tuple[bytes, ZnodeStat] | None] = []
        while True:
            kind, done, _ = _MULTI_HEADER.unpack_from(data, offset)
            offset += _MULTI_HEADER.size
            if done:
                return answers
            if kind == GetData.type:
                value, offset = read_buffer(data, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(data, offset))
                offset += stat_struct.size
                answers.append((bytes(value or b""), stat))
            elif kind == -1:  # an error result: its code follows
                code = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                if code != NoNodeError.code:
                    raise EXCEPTIONS[code]()
                answers.append(None)
            else:
                raise MarshallingError()


class _Conn:
    """One kazoo client (one ZooKeeper session at a time) and its watch state."""

    def __init__(self, zk: KazooClient, ttl: float):
        self.zk = zk
        self.ttl = ttl
        self.handler: _Connection = zk._connection
        self.watcher: Callable[[WatchedEvent], None] = lambda event: None
        self.live = threading.Event()  # connected (kazoo queues requests while it reconnects); see _await
        self.children: dict[str, set[str]] = {}  # parent path -> children with a data watch
        self.absent: set[str] = set()  # watched key paths armed through their parent

    def session(self) -> int | None:
        client_id = self.zk.client_id
        return client_id[0] if client_id else None

    def granted(self) -> float | None:
        """The session timeout (s) the server granted at the last connection."""
        granted = self.handler.granted_ms
        return granted / 1000.0 if granted else None


class _Session:
    def __init__(self, sid: int, ttl: float):
        self.id = _hex(sid)
        self.sid = sid
        self.ttl = ttl
        self.expired = False


class ZooKeeperBackend(Backend):
    """Primitives over ZooKeeper; see the module docstring."""

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
        self._multiread: bool | None = None  # does the server answer multi-reads? (None: not tried yet)
        self._warned: set[tuple[float, float]] = set()  # (asked, granted) session timeouts already logged
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
            with socket.create_connection(peer, timeout=self._left()) as probe:
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
    def _new_client(self, ttl: float, client_id: tuple[int, bytes] | None = None) -> KazooClient:
        """A kazoo client, not started, whose connection handler is a :class:`_Connection`."""
        zk = KazooClient(
            hosts=self._hosts,
            timeout=ttl,
            client_id=client_id,
            auth_data=self._auth,
            default_acl=self._acl,
            logger=_kazoo_logger(self._auth),
            handler=_RealHandler(),
            connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": min(1.0, ttl / 3),
                              "sleep_func": _RealHandler.sleep_func},
        )
        # kazoo would ask int(ttl * 1000) ms: a hair less than the TTL, which the server grants
        zk._session_timeout = _asked_ms(ttl)
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
        problem: BackendError | None = None
        while not zk.connected:
            try:
                step = min(0.02, self._left())
            except ConnectionLost:
                problem = ConnectionLost(f"ZooKeeper at {self.url.redacted()} did not answer: gave up after "
                                         f"{time.monotonic() - started:.2f}s")
                break
            if zk.client_state == KeeperState.AUTH_FAILED:
                problem = BackendError(f"ZooKeeper at {self.url.redacted()} refused the credentials")
                break
            if handler.unresolved_rounds:
                problem = ConnectionLost(f"no host of {self.url.redacted()} resolves to an address; gave up "
                                         f"after {time.monotonic() - started:.2f}s")
                break
            if handler.refused_rounds:
                problem = ConnectionLost(f"ZooKeeper at {self.url.redacted()} refused the connection (nothing "
                                         f"listens on {self._hosts}?); gave up after "
                                         f"{time.monotonic() - started:.2f}s")
                break
            _await(zk._live.is_set, zk._live.wait, step)
        if problem is not None:
            self._stop(zk, 0.0)
            raise problem

    def _start(self, ttl: float) -> _Conn:
        """A new connected client with session timeout ``ttl`` (not yet current)."""
        zk = self._new_client(ttl)
        conn = _Conn(zk, ttl)
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
        conn.live.set()
        if current:
            self._rearm_all(conn)

    def _grant(self, session: _Session, conn: _Conn) -> None:
        """Record the session timeout the server granted for ``session``."""
        granted = conn.granted()
        if granted is None:
            return
        self.granted_ttl = granted
        if conn.handler.granted_ms != _asked_ms(session.ttl) and (session.ttl, granted) not in self._warned:
            self._warned.add((session.ttl, granted))
            log.warning("ZooKeeper at %s granted a session timeout of %gs instead of the %gs asked (its "
                        "minSessionTimeout/maxSessionTimeout); sessions are counted with %gs",
                        self.url.redacted(), granted, session.ttl, min(granted, session.ttl))

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
            raise BackendError(f"ZooKeeper at {self.url.redacted()} denied access: check the credentials "
                               "and the ACLs of the chroot") from None
        except AuthFailedError:
            raise BackendError(f"ZooKeeper at {self.url.redacted()} refused the credentials") from None
        except KazooException as exc:
            raise BackendError(f"ZooKeeper error {type(exc).__name__}") from None

    # -- session ----------------------------------------------------------
    def _record(self, session_id: str) -> str:
        return f"{self._sessions}/{session_id}"

    def _live_session(self, conn: _Conn) -> _Session:
        """The session ephemeral znodes bind to, or SessionExpired."""
        session = self._session
        if session is None or session.expired:
            raise SessionExpired("no live ZooKeeper session; ephemeral keys need one")
        current = conn.session()
        if current is not None and current != session.sid:  # kazoo moved on to a new session
            session.expired = True
            raise SessionExpired("the ZooKeeper session expired")
        return session

    def _check_owner(self, conn: _Conn, path: str, stat: ZnodeStat, session: _Session) -> None:
        if stat.ephemeralOwner != session.sid:  # created by a session kazoo opened after an expiry
            session.expired = True
            conn.zk.delete_async(path)
            raise SessionExpired("the ZooKeeper session expired")

    @_bounded
    def open_session(self, ttl: float) -> str:
        with self._serialized():
            old = self._session
            conn = self._client()
            sid = conn.session()
            if conn.ttl != ttl or sid is None or (old is not None and sid == old.sid):
                conn = self._replace(ttl)
                sid = conn.session()
            if sid is None:
                raise ConnectionLost(f"ZooKeeper at {self.url.redacted()}: disconnected while opening a session")
            password = conn.zk.client_id[1]
            _, stat = self._wait(conn.zk.create_async(self._record(_hex(sid)), password, ephemeral=True,
                                                      makepath=True, include_data=True))
            session = _Session(sid, ttl)
            if stat.ephemeralOwner != sid:
                raise ConnectionLost("the ZooKeeper session changed while it was being opened")
            self.granted_ttl = None
            self._grant(session, conn)
            with self._lock:
                self._session = session
                self._own.clear()
            return session.id

    @_bounded
    def refresh_session(self) -> None:
        """A sync (answered only once the server has heard from the ensemble's
        leader) then an ``exists`` of the session record, sent together: the
        server answering has received them after this call started, and
        renews the session from that moment."""
        conn = self._conn
        if conn is None:
            raise SessionExpired("no ZooKeeper session")
        session = self._live_session(conn)
        if not conn.live.is_set():
            self._settle(conn, session)
            if not conn.live.is_set():
                raise ConnectionLost(f"disconnected from ZooKeeper at {self.url.redacted()}; "
                                     f"still reconnecting{_elapsed()}")
        started = time.monotonic()
        synced = conn.zk.sync_async("/")
        found = conn.zk.exists_async(self._record(session.id))
        try:
            # An answer later than the session timeout proves nothing: the session may be gone by then.
            with deadline.bounded(started + min(session.ttl, conn.granted() or session.ttl)):
                self._wait(synced, session=True)
                stat = self._wait(found, session=True)
        except ConnectionLost:
            self._settle(conn, session)  # SessionExpired if the connection dropped because it ended
            raise
        if stat is None or stat.ephemeralOwner != session.sid:
            session.expired = True
            raise SessionExpired("the ZooKeeper session expired")
        if self._orphans:
            with contextlib.suppress(ConnectionLost):  # the session is renewed; orphans wait for the next refresh
                self._remove_orphans(conn)

    def _settle(self, conn: _Conn, session: _Session) -> None:
        """While disconnected, wait (within the deadline, never raising
        ConnectionLost) for kazoo's reconnection, which tells whether
        ``session`` lives on or has ended (LOST, as after an eviction; kazoo
        then connects with a new session); SessionExpired if it has ended."""
        _await(lambda: conn.live.is_set() or session.expired, conn.live.wait, self._budget())
        self._live_session(conn)

    @_bounded
    def close_session(self) -> None:
        with self._serialized():
            with self._lock:
                session, self._session = self._session, None
                self._own.clear()
                conn = self._conn
            if session is None or conn is None:
                return
            current = conn.session()
            if current is not None and current != session.sid:
                return  # that session already expired; this client runs a fresh one
            with self._lock:
                self._conn = None
            self._stop(conn.zk, self._budget())  # ends the session: its ephemeral znodes go
            if self._watches and not self._closed:
                with contextlib.suppress(ConnectionLost):  # else the next operation reconnects
                    self._replace(conn.ttl)

    @_bounded
    def expire_session(self, session_id: str) -> bool:
        sid = _session_int(session_id)
        if sid is None:
            return False
        ended = False
        for _ in range(3):  # its owner may attach again before the close is served: then again
            try:
                password, stat = self._wait(self._client().zk.get_async(self._record(_hex(sid))), NoNodeError)
            except NoNodeError:
                return ended
            except ConnectionLost:
                if ended:  # it was this backend's own session: its client is starting a new one
                    return True
                raise
            if stat.ephemeralOwner != sid:
                return ended
            ended = self._attach_and_close(sid, password) or ended
        return ended

    def _attach_and_close(self, sid: int, password: bytes) -> bool:
        """Attach a second client to session ``sid`` and close it: the server
        ends the session as on expiry. False if it could not attach."""
        intruder = self._new_client(self._session.ttl if self._session else _DEFAULT_TTL, client_id=(sid, password))
        try:
            self._run(intruder)
            return intruder.client_id is not None and intruder.client_id[0] == sid
        finally:
            self._stop(intruder, self._budget())

    @_bounded
    def session_last_seen(self, session_id: str) -> float | None:
        sid = _session_int(session_id)
        if sid is None:
            return None
        stat = self._wait(self._client().zk.exists_async(self._record(_hex(sid))))
        return time.time() if stat is not None and stat.ephemeralOwner == sid else None

    # -- keys -------------------------------------------------------------
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

    def _entry(self, path: str, data: bytes, stat: ZnodeStat) -> Entry | None:
        split = _split(data)
        key = self._key(path)
        if split is None or key is None:
            return None
        value, sequential = split
        owner = _hex(stat.ephemeralOwner) if stat.ephemeralOwner else None
        return Entry(key, value, stat.mzxid, stat.czxid if sequential else None, owner)

    @_bounded
    def get(self, key: str) -> Entry | None:
        path = self._path(key)
        try:
            data, stat = self._wait(self._client().zk.get_async(path), NoNodeError)
        except NoNodeError:
            return None
        return self._entry(path, data, stat)

    @_bounded
    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        data = _KEY + _value(value)
        conn = self._client()
        session = self._live_session(conn) if ephemeral else None
        path = self._path(key)
        while True:
            try:
                _, stat = self._wait(conn.zk.create_async(path, data, ephemeral=ephemeral, include_data=True),
                                     NodeExistsError, NoNodeError, NoChildrenForEphemeralsError,
                                     session=ephemeral)
            except NoNodeError:
                self._wait(conn.zk.ensure_path_async(_parent(path)))
                continue
            except NoChildrenForEphemeralsError:
                raise BackendError(f"cannot create {key!r}: on ZooKeeper an ephemeral key has no keys "
                                   "under it") from None
            except NodeExistsError:
                if ephemeral:
                    return None
                try:  # a mere parent znode becomes a key; an existing key stays
                    old, stat = self._wait(conn.zk.get_async(path), NoNodeError)
                    if _split(old) is not None:
                        return None
                    stat = self._wait(conn.zk.set_async(path, data, stat.version), NoNodeError, BadVersionError)
                except (NoNodeError, BadVersionError):
                    continue  # changed meanwhile: try again
                return self._entry(path, data, stat)
            if session is not None:
                self._check_owner(conn, path, stat, session)
            return self._entry(path, data, stat)

    @_bounded
    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        value = _value(value)
        conn = self._client()
        path = self._path(key)
        mine = self._own.get(path)
        try:
            if mine is not None and mine[0] == version:
                _, znode_version, header = mine
            else:
                old, stat = self._wait(conn.zk.get_async(path), NoNodeError)
                if _split(old) is None or stat.mzxid != version:
                    return None
                znode_version, header = stat.version, _header(old)
            data = header + value
            stat = self._wait(conn.zk.set_async(path, data, znode_version), NoNodeError, BadVersionError)
        except (NoNodeError, BadVersionError):
            return None
        with self._lock:
            if path in self._own:
                self._own[path] = (stat.mzxid, stat.version, header)
        return self._entry(path, data, stat)

    @_bounded
    def delete(self, key: str, version: int | None = None) -> bool:
        conn = self._client()
        path = self._path(key)
        mine = self._own.get(path)
        if mine is not None and version in (None, mine[0]):  # my sequential key: one round trip
            try:
                self._wait(conn.zk.delete_async(path, -1 if version is None else mine[1]),
                           NoNodeError, BadVersionError, NotEmptyError)
                self._own.pop(path, None)
                return True
            except NoNodeError:
                self._own.pop(path, None)
                return False
            except BadVersionError:
                return False
            except NotEmptyError:
                pass  # persistent, and the parent of other keys: see below
        while True:
            try:
                data, stat = self._wait(conn.zk.get_async(path), NoNodeError)
                if _split(data) is None or (version is not None and stat.mzxid != version):
                    return False
                self._wait(conn.zk.delete_async(path, stat.version), NoNodeError, BadVersionError, NotEmptyError)
                return True
            except NoNodeError:
                return False
            except BadVersionError:
                if version is not None:
                    return False  # changed meanwhile
            except NotEmptyError:  # also the parent of other keys: keep it as a mere parent
                try:
                    self._wait(conn.zk.set_async(path, b"", stat.version), NoNodeError, BadVersionError)
                    return True
                except NoNodeError:
                    return False
                except BadVersionError:
                    if version is not None:
                        return False

    @_bounded
    def list(self, prefix: str) -> builtins.list[Entry]:
        conn = self._client()
        head, _, start = prefix.rpartition("/")
        parent = self._path(head)
        return self._walk(conn, parent, start, conn.zk.get_children_async(parent), {})

    def _walk(self, conn: _Conn, parent: str, start: str, children: Result,
              known: dict[str, tuple[bytes, ZnodeStat]]) -> builtins.list[Entry]:
        """Every key under ``parent`` whose name there starts with ``start``,
        level by level: the listings of one level are in flight together,
        then the data of all their children is read in one request."""
        level: builtins.list[tuple[str, Result]] = [(parent, children)]
        entries: builtins.list[Entry] = []
        while level:
            found: builtins.list[tuple[str, bytes, ZnodeStat]] = []
            unread: builtins.list[str] = []
            for path, listing in level:
                try:
                    names = self._wait(listing, NoNodeError)
                except NoNodeError:
                    continue  # deleted meanwhile
                for name in names:
                    if _SEGMENT.match(name) and (path != parent or name.startswith(start)):
                        child = f"{path}/{name}"
                        if child in known:
                            found.append((child, *known[child]))
                        else:
                            unread.append(child)
            found += self._read_all(conn, unread)
            level = []
            for path, data, stat in found:
                entry = self._entry(path, data, stat)
                if entry is not None:
                    entries.append(entry)
                if stat.numChildren:
                    level.append((path, conn.zk.get_children_async(path)))
        return sorted(entries, key=lambda e: e.key)

    def _read_all(self, conn: _Conn, paths: builtins.list[str]) -> builtins.list[tuple[str, bytes, ZnodeStat]]:
        """(path, data, stat) of each of ``paths`` that exists: one multi-read
        request per batch (ZooKeeper 3.6+), else one read per znode."""
        if not paths:
            return []
        if self._multiread is not False:
            batches: builtins.list[builtins.list[str]] = [[]]
            size = 0
            for path in paths:
                cost = _MULTI_HEADER.size + 5 + len(path.encode())
                if batches[-1] and (len(batches[-1]) >= _MULTIREAD_BATCH or size + cost > _MULTIREAD_BYTES):
                    batches.append([])
                    size = 0
                batches[-1].append(path)
                size += cost
            pending = []
            for batch in batches:
                result = conn.zk.handler.async_result()
                conn.zk._call(_MultiRead(batch), result)
                pending.append((batch, result))
            out: builtins.list[tuple[str, bytes, ZnodeStat]] = []
            try:
                for batch, result in pending:
                    answers = self._wait(result, UnimplementedError, MarshallingError)
                    out += [(path, *answer) for path, answer in zip(batch, answers, strict=True)
                            if answer is not None]
            except (UnimplementedError, MarshallingError, struct.error) as exc:
                if self._multiread:
                    raise BackendError(f"ZooKeeper answered a multi-read with {type(exc).__name__}") from None
                # ZooKeeper before 3.6 (it also drops the connection; kazoo reconnects, the session lives)
                log.info("ZooKeeper at %s has no multi-read (%s): one read per znode",
                         self.url.redacted(), type(exc).__name__)
                self._multiread = False
            else:
                self._multiread = True
                return out
        reads = [(path, conn.zk.get_async(path)) for path in paths]
        out = []
        for path, result in reads:
            try:
                data, stat = self._wait(result, NoNodeError)
            except NoNodeError:
                continue
            out.append((path, data, stat))
        return out

    # -- sequence ---------------------------------------------------------
    @_bounded
    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._sequential(prefix, value, ephemeral, listing=False)[0]

    @_bounded
    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """One round trip when the queue's parent exists: the creation and the
        listing are sent together (ZooKeeper answers a client in order)."""
        return self._sequential(prefix, value, True, listing=True)

    def _sequential(self, prefix: str, value: bytes, ephemeral: bool,
                    listing: bool) -> tuple[Entry, builtins.list[Entry]]:
        value = _value(value)
        conn = self._client()
        session = self._live_session(conn) if ephemeral else None
        parent = self._dir(prefix)
        tag = os.urandom(_TAG)
        data = _SEQ + tag + value
        while True:
            created = conn.zk.create_async(parent + "/", data, ephemeral=ephemeral, sequence=True,
                                           include_data=True)
            children = conn.zk.get_children_async(parent) if listing else None
            try:
                path, stat = self._wait(created, NoNodeError, session=ephemeral)
            except NoNodeError:
                self._wait(conn.zk.ensure_path_async(parent))
                continue
            except ConnectionLost:
                self._track_orphan(conn, created, parent, tag)
                raise
            break
        if session is not None:
            self._check_owner(conn, path, stat, session)
        with self._lock:
            self._own[path] = (stat.mzxid, stat.version, _header(data))
        entry = self._entry(path, data, stat)
        assert entry is not None
        if children is None:
            return entry, []
        return entry, self._walk(conn, parent, "", children, {path: (data, stat)})

    def _track_orphan(self, conn: _Conn, created: Result, parent: str, tag: bytes) -> None:
        """A creation whose outcome is unknown: remove its znode if it was made."""
        def settled(result: Result) -> None:
            if result.successful():
                conn.zk.delete_async(result.value[0])
            elif isinstance(result.exception, ConnectionLoss):  # maybe made: look for its tag later
                with self._lock:
                    self._orphans[tag] = parent

        created.rawlink(settled)

    def _remove_orphans(self, conn: _Conn) -> None:
        with self._lock:
            orphans, self._orphans = self._orphans, {}
        for tag, parent in orphans.items():
            try:
                names = self._wait(conn.zk.get_children_async(parent), NoNodeError)
                reads = [(f"{parent}/{n}", conn.zk.get_async(f"{parent}/{n}")) for n in names]
                for path, result in reads:
                    try:
                        data, _ = self._wait(result, NoNodeError)
                    except NoNodeError:
                        continue
                    if data[:1 + _TAG] == _SEQ + tag:
                        self._wait(conn.zk.delete_async(path), NoNodeError)
            except NoNodeError:
                pass
            except ConnectionLost:
                with self._lock:
                    self._orphans.update(orphans)
                raise

    # -- watch ------------------------------------------------------------
    @_bounded
    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        watch = CallbackWatch(callback, lambda w: self._unwatch(key, w))
        with self._lock:
            first = key not in self._watches
            self._watches.setdefault(key, set()).add(watch)
            conn = self._conn
            if first and conn is not None and _is_prefix(key):
                conn.children.pop(self._dir(key), None)  # arm a data watch on every child again
        if first and conn is not None and conn.live.is_set():
            armed = threading.Event()
            self._arm(conn, key, lambda *_: armed.set())
            _await(armed.is_set, armed.wait, self._budget())
        return watch  # if not armed yet, the reconnection arms it and calls back

    def _unwatch(self, key: str, watch: CallbackWatch) -> None:
        with self._lock:
            watches = self._watches.get(key)
            if watches is None:
                return
            watches.discard(watch)
            if not watches:
                del self._watches[key]
                conn = self._conn
                if conn is not None and _is_prefix(key):
                    conn.children.pop(self._dir(key), None)
                elif conn is not None:
                    conn.absent.discard(self._path(key))

    def _fire(self, *keys: str) -> None:
        """Call the watches of ``keys`` right here, on kazoo's thread and
        outside any lock: watch callbacks are quick by contract, and a lock
        handoff saves a thread switch."""
        with self._lock:
            watches = [w for key in keys for w in self._watches.get(key, ())]
        for watch in watches:
            self._submit(watch.fire)

    def _submit(self, fn: Callable[[], None]) -> None:
        if self._dispatcher is not None:
            self._dispatcher.submit(fn)

    def _arm(self, conn: _Conn, key: str, done: Callable[..., None]) -> None:
        if _is_prefix(key):
            self._arm_prefix(conn, self._dir(key), done)
        else:
            self._arm_key(conn, self._path(key), done)

    def _rearm_all(self, conn: _Conn) -> None:
        """Arm every watch on ``conn``, then call every callback once."""
        with self._lock:
            keys = list(self._watches)
        if not keys:
            return
        remaining = [len(keys)]

        def one_done(*_: object) -> None:
            with self._lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._fire(*keys)

        for key in keys:
            self._arm(conn, key, one_done)

    def _arm_key(self, conn: _Conn, path: str, done: Callable[[bool], None]) -> None:
        """Data watch on ``path``, or while it is absent a child watch on its
        parent; then ``done(exists)``."""
        zk, parent = conn.zk, _parent(path)

        def on_get(result: Result) -> None:
            if result.successful():
                with self._lock:
                    conn.absent.discard(path)
                done(True)
            elif isinstance(result.exception, NoNodeError):
                with self._lock:
                    watched = self._key(path) in self._watches
                    if watched:
                        conn.absent.add(path)
                    else:
                        conn.absent.discard(path)
                if watched:
                    zk.get_children_async(parent, watch=conn.watcher).rawlink(on_children)
                else:
                    done(False)  # cancelled meanwhile: leave no watch behind
            else:
                done(False)

        def on_children(result: Result) -> None:
            if result.successful():
                if path.rsplit("/", 1)[1] in result.value:
                    zk.get_async(path, watch=conn.watcher).rawlink(on_get)  # created meanwhile
                else:
                    done(False)
            elif isinstance(result.exception, NoNodeError):  # no parent either: watch the key itself
                zk.exists_async(path, watch=conn.watcher).rawlink(lambda r: done(bool(r.successful() and r.value)))
            else:
                done(False)

        zk.get_async(path, watch=conn.watcher).rawlink(on_get)

    def _arm_prefix(self, conn: _Conn, parent: str, done: Callable[[], None]) -> None:
        """Child watch on ``parent`` and a data watch on each new child; then ``done()``."""
        zk = conn.zk

        def on_children(result: Result) -> None:
            if not result.successful():
                if isinstance(result.exception, NoNodeError):
                    zk.exists_async(parent, watch=conn.watcher).rawlink(on_exists)
                else:
                    done()
                return
            names = {n for n in result.value if _SEGMENT.match(n)}
            with self._lock:
                key = self._key(parent)
                if key is None or _as_prefix(key) not in self._watches:
                    names = set()  # cancelled meanwhile
                armed = conn.children.setdefault(parent, set())
                armed &= names
                new = names - armed
                armed |= new
            if not new:
                done()
                return
            remaining = [len(new)]

            def on_child(name: str, child: Result) -> None:
                with self._lock:
                    if not child.successful():
                        conn.children.get(parent, set()).discard(name)
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last:
                    done()

            for name in new:
                zk.get_async(f"{parent}/{name}", watch=conn.watcher).rawlink(
                    lambda r, name=name: on_child(name, r))

        def on_exists(result: Result) -> None:
            if result.successful() and result.value is not None:
                zk.get_children_async(parent, watch=conn.watcher).rawlink(on_children)  # created meanwhile
            else:
                done()

        zk.get_children_async(parent, watch=conn.watcher).rawlink(on_children)

    def _on_event(self, conn: _Conn, event: WatchedEvent) -> None:
        """A one-shot watch fired (kazoo's callback thread: must not block)."""
        path = event.path
        if event.type == EventType.NONE or path is None:
            return  # connection state: _on_state re-arms everything
        parent = _parent(path)
        key, parent_key = self._key(path), self._key(parent)
        with self._lock:
            if conn is not self._conn or key is None:
                return
            key_watched = bool(key) and key in self._watches and event.type != EventType.CHILD
            dir_key = _as_prefix(key)
            dir_watched = dir_key in self._watches and event.type != EventType.CHANGED
            child_key = _as_prefix(parent_key) if parent_key is not None else None
            child_changed = child_key in self._watches and event.type == EventType.CHANGED
            if event.type in (EventType.CHANGED, EventType.DELETED):  # that data watch is spent
                conn.children.get(parent, set()).discard(path.rsplit("/", 1)[1])
            absent = [p for p in conn.absent if _parent(p) == path] \
                if event.type in (EventType.CHILD, EventType.DELETED) else []
        if key_watched:
            if event.type == EventType.DELETED:  # wake at once (a lock handoff); call again if re-created
                self._fire(key)
                self._submit(lambda: self._rearm_deleted(conn, path, key))
            else:
                self._arm_key(conn, path, lambda _: self._fire(key))
        if dir_watched:
            self._arm_prefix(conn, path, lambda: self._fire(dir_key))
        if child_changed and child_key is not None:
            watched_child_key = child_key
            self._arm_prefix(conn, parent, lambda: self._fire(watched_child_key))
        for absent_path in absent:
            self._rearm_absent(conn, absent_path)

    def _rearm_deleted(self, conn: _Conn, path: str, key: str) -> None:
        """After a watched key's deletion, watch for its re-creation if it is
        still watched. Runs on the dispatcher after the callbacks, and first
        lets the woken threads run: a lock waiter cancels its watch at once,
        and its next requests then do not queue behind a useless re-arm (0.2
        to 0.4 ms of a ZooKeeper lock handoff). A change meanwhile is not
        missed: the re-arm reads the key and calls back if it exists."""
        _real_time.sleep(0)  # yield the GIL to the woken waiters
        with self._lock:
            if key not in self._watches or conn is not self._conn:
                return
        self._arm_key(conn, path, lambda exists: self._fire(key) if exists else None)

    def _rearm_absent(self, conn: _Conn, path: str) -> None:
        """The parent of an absent watched key changed: call back if the key appeared."""
        key = self._key(path)
        if key is not None:
            self._arm_key(conn, path, lambda exists: self._fire(key) if exists else None)
