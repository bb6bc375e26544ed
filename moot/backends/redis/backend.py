"""``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) and
``redis+sentinel://[[user]:password@]sentinel:port[,sentinel:port...]/service[/db]``.

Needs Redis 5.0 or newer (scripts replicate their effects, so they may read
the server's clock); install with ``pip install 'moot[redis]'``. Options:
``socket_timeout`` (the most one call may take, in seconds, default 5: see
Deadlines), ``max_connections`` (command connections, default 50),
``sentinel_password`` (for the Sentinels, if they need one), and for
``rediss://``: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` (required, optional or none). An ACL user needs the keys
``~moot:*``, the channels ``&moot:*`` and the commands EVALSHA, SCRIPT,
PEXPIRE, PTTL, HGET, HSET, HGETALL, HDEL, DEL, ZADD, ZRANGEBYLEX, PUBLISH,
TIME (the last seven run inside the scripts), MULTI, EXEC, SELECT, SUBSCRIBE,
UNSUBSCRIBE, PING and INFO.

Layout (every name starts with ``moot:``; ``KP`` below):

* ``KP{tag}rest`` -- one hash per *directory* (a key prefix ending in ``/``)
  holding the keys directly under it: field = last segment, value =
  ``version:seq:owner:value``. Its field ``#n`` is the directory's counter,
  advanced by every write under it: it gives versions (unique per key across
  deletes) and sequence numbers (fencing tokens; see below). ``tag`` is the
  directory's first three segments (``<namespace>/lock/<name>``), so every
  key of one lock, group or election shares one Cluster hash slot.
* ``KPdirs`` -- a sorted set of every directory ever written (with its hash's
  name), to list a prefix recursively (``coord.locks()``).
* ``KPs:<session>`` -- a session: a hash whose expiry is the session's TTL.
  It holds the TTL and an index of the session's ephemeral keys, so a
  heartbeat is ONE command (``PEXPIRE``) however many locks and memberships
  the session has, and closing a session removes its keys at once.

Fencing tokens survive the loss of the engine's data. Each write takes the
directory's next number as ``max(counter + 1, server clock in microseconds)``
(the clock read with ``TIME`` inside the script) and stores it as the new
counter. So every ``seq`` (and version) issued for a prefix is strictly
greater than every one issued before for it, across restarts of every client
and also after the engine lost its data (a restart without persistence, a
Sentinel failover to a replica that missed the last writes, a flushed
database), under this precondition: (a) the clock of the server that issues
the tokens (after a failover, the new primary's) does not go back, across the
loss, by more than the time that passed between the last token issued before
the loss and the first one issued after it; and (b) tokens are issued on one
prefix at no more than 1,000,000 per second on average, so that the counter
never runs ahead of the clock (each script takes a Redis server more than a
microsecond, so one server cannot exceed this). Tokens are below 2**53 (exact
in a double) until the year 2255. The data loss still ends every session,
and with them every lock hold, as with any engine that loses its state.

Ephemeral entries carry no TTL of their own: they name their owner session,
and every script that reads one checks, atomically, that the owner's session
key still exists; an entry whose owner is gone is treated as absent and
removed on the spot (and announced, see below). An uncontended lock acquire
is one script call (``enqueue``: advance the counter, create the entry,
return the live queue), a release is one more. The backend speaks RESP
itself, over a pool of its own connections: no client library sits between
a call and its socket, so every step is bounded by the call's deadline, and
a forked child can drop the connections without a byte sent.

Deadlines: every primitive returns or raises ConnectionLost (whose message
states the time really spent) within :func:`moot.deadline.remaining` of
``socket_timeout`` (``connect()`` within its ``timeout``), whatever the
server does: connecting, the TLS and AUTH handshake, sending, reading the
reply, waiting for a free pooled connection (``max_connections``) or for a
subscription to be confirmed all count against the same deadline. A refused
connection fails at once and says so.

Session validity: the TTL sent with ``PEXPIRE`` is an int of milliseconds
between 1 and 2**31 - 1 (about 24.8 days; a longer TTL is cut to that and
``granted_ttl`` says so), so a session key always expires. Redis counts a
``PEXPIRE`` from when it receives it, which is after the call started:
``refresh_session()`` is one ``PEXPIRE`` in one round trip, never resent.

Fork: in a forked child every backend inherited from the parent forgets its
connections, pool, listener and session at once (``os.register_at_fork``;
:meth:`RedisBackend.forget_after_fork` does the same when called): the
inherited sockets are closed with a plain ``close()``, with no QUIT,
``shutdown()``, UNSUBSCRIBE or session deletion, so the parent's session
and locks are untouched. The child's backend is then closed
(CoordinatorClosed names the fix: connect in the child) until ``connect()``
is called on it again.

Green threads: under ``eventlet.monkey_patch()`` the backend works as
usual. Its locks, events and listener thread are real ones
(:mod:`moot.realthreads`), since the coordinator's real heartbeat thread
calls it too; none is held across I/O, and a green caller that must wait
(for a free connection, for a subscription to be confirmed) polls with
``time.sleep``, which yields to the hub. ``select.poll`` (which the patching
removes) is taken from eventlet's saved original ``select``, as are
``os.read`` and ``os.write`` for the listener's wake-up pipe. Command
connections are the application's sockets (green ones there), so a call
from a green thread lets the others run while it waits for the server.

Watches: every write, and every removal of a dead entry, publishes from
inside its script on the channels ``moot:<db>:<key>`` and
``moot:<db>:<directory>``; ``watch()`` subscribes over ONE pub/sub connection
per backend object, owned by ONE listener thread (callbacks run on one
dispatcher thread). An ephemeral entry whose owner session *expires* causes
no write, so the listener also re-checks each watched key or prefix when the
earliest foreign session owning an entry there would expire (the owners and
their PTTL come with the announcements and from the re-check script itself);
a re-check removes dead entries, which publishes, which wakes every watcher
in every process. A waiter thus learns of a dead holder a few milliseconds
after the holder's session expires. The cost: while a watched entry's owner
keeps refreshing, its watcher runs one re-check script per the owner's TTL
or so (none for entries of its own session: one timer at its own session's
expiry covers them, and reports the loss to the session listener).
Keyspace notifications were not used: they need ``notify-keyspace-events``
in the server's configuration, and expired-key events fire only when Redis
happens to notice the expiry. If the pub/sub connection drops, it is
re-established and every watch fires once, since notifications may have
been missed meanwhile.

Sentinel: commands and notifications go to the primary that the Sentinels
name (asked with ``SENTINEL MASTER`` for each new connection; a Sentinel that
sees the primary down is passed over); the listener also subscribes to a
Sentinel's ``+switch-master`` and, on a failover, drops every connection to
the old primary at once (which may stay writable until Sentinel demotes it).
Replication is asynchronous: a write acknowledged by a primary that fails
before replicating it is lost, and with it possibly a lock hold (configure
``min-replicas-to-write`` on the servers to narrow this window); fencing
tokens still grow (see above).

Operations: run the server with ``maxmemory-policy noeviction`` (an evicted
session key ends a session). Persistence (RDB or AOF) is not needed for
fencing tokens to keep growing, but without it a server restart ends every
session.

Redis Cluster: the keys of one lock/group share a slot, but the scripts read
session keys (which live in other slots) to check an entry's owner, and
recursive listing reads the directory registry, so this backend supports a
single Redis server (or a Sentinel-managed primary), not Cluster. A Cluster
mode would have to check owners' liveness from the client (one more round
trip, except for entries of its own session, as in an uncontended acquire).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import heapq
import importlib
import itertools
import logging
import math
import os
import select
import selectors
import socket
import ssl
import sys
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from moot.backends.base import Backend, CallbackWatch, Dispatcher, Entry, Watch
from moot.deadline import bounded, remaining
from moot.errors import (
    BackendError,
    ConnectionLost,
    CoordinatorClosed,
    InvalidArgument,
    InvalidURL,
    SessionExpired,
)
from moot.realthreads import threading
from moot.url import BackendURL, option_float

log = logging.getLogger("moot.backends.redis")

KP = "moot:"
_PING_INTERVAL = 5.0  # seconds of silence on the pub/sub connection before it is probed
_MARGIN = 0.005  # seconds past an owner session's expiry before re-checking its entries

# -- scripts -----------------------------------------------------------------
# Every script gets ARGV[1] = key prefix, ARGV[2] = channel prefix.
_COMMON = r"""
if redis.replicate_commands then redis.replicate_commands() end
local KP, CP = ARGV[1], ARGV[2]
local pttls = {}
local function pttl_of(owner)
  local t = pttls[owner]
  if t == nil then
    t = redis.call('PTTL', KP .. 's:' .. owner)
    pttls[owner] = t
  end
  return t
end
local function owner_of(raw)
  return string.match(raw, '^%d+:%d*:([^:]*):')
end
local function announce(dir, leaf, payload)
  redis.call('PUBLISH', CP .. dir .. leaf, payload)
  redis.call('PUBLISH', CP .. dir, payload)
end
local function live(dkey, dir, leaf, raw)
  local owner = owner_of(raw)
  if owner == '' or pttl_of(owner) ~= -2 then return true end
  redis.call('HDEL', dkey, leaf)
  announce(dir, leaf, '')
  return false
end
local function read(dkey, dir, leaf)
  local raw = redis.call('HGET', dkey, leaf)
  if raw and live(dkey, dir, leaf, raw) then return raw end
  return false
end
local function collect(dkey, dir, out)
  local all = redis.call('HGETALL', dkey)
  for i = 1, #all, 2 do
    if string.byte(all[i]) ~= 35 and live(dkey, dir, all[i], all[i + 1]) then
      out[#out + 1] = dir .. all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end
local function list(prefix, out)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KP .. 'dirs', '[' .. prefix, '(' .. prefix .. '\255')) do
    local cut = string.find(m, ' ', 1, true)
    collect(string.sub(m, cut + 1), string.sub(m, 1, cut - 1), out)
  end
  return out
end
local function bump(dkey, dir)
  local n = tonumber(redis.call('HGET', dkey, '#n'))
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if n == nil then
    redis.call('ZADD', KP .. 'dirs', 0, dir .. ' ' .. dkey)
    n = now
  else
    n = math.max(n + 1, now)
  end
  redis.call('HSET', dkey, '#n', string.format('%d', n))
  return n
end
local function writer(owner)
  if owner == '' then return '' end
  local t = pttl_of(owner)
  if t == -2 then return false end
  return owner .. ':' .. t
end
local function own(owner, key, dkey)
  if owner ~= '' then redis.call('HSET', KP .. 's:' .. owner, key, dkey) end
end
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf
_GET = "return read(KEYS[1], ARGV[3], ARGV[4])"

# ARGV[3] = prefix
_LIST = "return list(ARGV[3], {})"

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = owner or '', ARGV[6] = value
_CREATE = """
local dkey, dir, leaf, owner = KEYS[1], ARGV[3], ARGV[4], ARGV[5]
local payload = writer(owner)
if not payload then return redis.error_reply('MOOTSESSION') end
if read(dkey, dir, leaf) then return false end
local raw = string.format('%d', bump(dkey, dir)) .. '::' .. owner .. ':' .. ARGV[6]
redis.call('HSET', dkey, leaf, raw)
own(owner, dir .. leaf, dkey)
announce(dir, leaf, payload)
return raw
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = owner or '', ARGV[5] = value,
# ARGV[6] = '1' to return the live entries under the directory too
_SEQUENTIAL = """
local dkey, dir, owner = KEYS[1], ARGV[3], ARGV[4]
local payload = writer(owner)
if not payload then return redis.error_reply('MOOTSESSION') end
local n = bump(dkey, dir)
local leaf = string.format('%020d', n)
local raw = string.format('%d:%d:', n, n) .. owner .. ':' .. ARGV[5]
redis.call('HSET', dkey, leaf, raw)
own(owner, dir .. leaf, dkey)
announce(dir, leaf, payload)
local out = {dir .. leaf, raw}
if ARGV[6] == '1' then list(dir, out) end
return out
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = version, ARGV[6] = value
_CAS = """
local dkey, dir, leaf = KEYS[1], ARGV[3], ARGV[4]
local raw = read(dkey, dir, leaf)
if not raw then return false end
local version, seq, owner = string.match(raw, '^(%d+):(%d*):([^:]*):')
if version ~= ARGV[5] then return false end
raw = string.format('%d', bump(dkey, dir)) .. ':' .. seq .. ':' .. owner .. ':' .. ARGV[6]
redis.call('HSET', dkey, leaf, raw)
announce(dir, leaf, writer(owner))
return raw
"""

# KEYS[1] = directory hash; ARGV[3] = directory, ARGV[4] = leaf, ARGV[5] = version or ''
_DELETE = """
local dkey, dir, leaf = KEYS[1], ARGV[3], ARGV[4]
local raw = read(dkey, dir, leaf)
if not raw then return 0 end
local version, owner = string.match(raw, '^(%d+):%d*:([^:]*):')
if ARGV[5] ~= '' and version ~= ARGV[5] then return 0 end
redis.call('HDEL', dkey, leaf)
if owner ~= '' then redis.call('HDEL', KP .. 's:' .. owner, dir .. leaf) end
announce(dir, leaf, '')
return 1
"""

# KEYS[1] = session hash; ARGV[3] = session id
_END_SESSION = """
local index = redis.call('HGETALL', KEYS[1])
if #index == 0 then return 0 end
redis.call('DEL', KEYS[1])
for i = 1, #index, 2 do
  local key, dkey = index[i], index[i + 1]
  if string.byte(key) ~= 35 then
    local dir, leaf = string.match(key, '^(.*/)(.*)$')
    if not dir then dir, leaf = '', key end
    local raw = redis.call('HGET', dkey, leaf)
    if raw and owner_of(raw) == ARGV[3] then
      redis.call('HDEL', dkey, leaf)
      announce(dir, leaf, '')
    end
  end
end
redis.call('PUBLISH', CP .. 's:' .. ARGV[3], '')
return 1
"""

# Re-check of a watched key (ARGV[4] = leaf) or directory (ARGV[4] = ''): removes
# dead entries and returns the PTTL (ms) of the first session other than
# ARGV[5] to expire among the owners of the live ones, -1 if none.
# KEYS[1] = directory hash; ARGV[3] = directory
_RECHECK = """
local dkey, dir, leaf = KEYS[1], ARGV[3], ARGV[4]
local fields
if leaf == '' then
  fields = redis.call('HGETALL', dkey)
else
  local raw = redis.call('HGET', dkey, leaf)
  fields = raw and {leaf, raw} or {}
end
local soonest = -1
for i = 1, #fields, 2 do
  if string.byte(fields[i]) ~= 35 and live(dkey, dir, fields[i], fields[i + 1]) then
    local owner = owner_of(fields[i + 1])
    if owner ~= '' and owner ~= ARGV[5] then
      local t = pttl_of(owner)
      if t >= 0 and (soonest < 0 or t < soonest) then soonest = t end
    end
  end
end
return soonest
"""

_SCRIPTS = {"get": _GET, "list": _LIST, "create": _CREATE, "sequential": _SEQUENTIAL, "cas": _CAS,
            "delete": _DELETE, "end_session": _END_SESSION, "recheck": _RECHECK}


def split_key(key: str) -> tuple[str, str]:
    """(directory, leaf) of a key; the directory ends in ``/`` (or is empty)."""
    cut = key.rfind("/") + 1
    return key[:cut], key[cut:]


def dir_key(directory: str) -> str:
    """Name of the Redis hash holding the keys directly under ``directory``.

    Hash-tagged by the directory's first three segments, so every directory
    of one lock, group or election lives in the same Cluster slot."""
    tag = "/".join(directory.split("/")[:3]).rstrip("/")
    return f"{KP}{{{tag}}}{directory[len(tag):]}"


def _entry(key: bytes, raw: bytes) -> Entry:
    version, seq, owner, value = raw.split(b":", 3)
    return Entry(key.decode(), value, int(version), int(seq) if seq else None, owner.decode() or None)


# -- the pub/sub connection ------------------------------------------------------
class _RespError(Exception):
    """An error reply, or bytes that are not RESP."""


class _Incomplete(Exception):
    pass


def _pack(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def _parse(buf: bytearray, pos: int) -> tuple[object, int]:
    """One RESP2 reply from ``buf`` at ``pos``: (reply, next position)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line, pos = buf[pos:pos + 1], bytes(buf[pos + 1:end]), end + 2
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos:pos + size]), pos + size + 2
    if kind == b"*":
        items = []
        for _ in range(max(int(line), 0)):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == b":":
        return int(line), pos
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return _RespError(line.decode(errors="replace")), pos
    raise _RespError(f"unexpected byte {bytes(kind)!r} from the server")


class _Reader:
    """Accumulates bytes from a socket and yields complete replies."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def replies(self, data: bytes) -> list[object]:
        self.buf += data
        out: list[object] = []
        pos = 0
        try:
            while pos < len(self.buf):
                reply, pos = _parse(self.buf, pos)
                out.append(reply)
        except _Incomplete:
            pass
        del self.buf[:pos]
        return out


_NEW, _PENDING, _LIVE = "new", "pending", "live"


class _Target:
    """One subscribed channel: a watched key or prefix, or a session's end notices.

    ``scope`` = (directory hash, directory, leaf or '' for a prefix) is what a
    re-check looks at; None for a channel that needs none."""

    def __init__(self, channel: bytes, scope: tuple[str, str, str] | None):
        self.channel = channel
        self.scope = scope
        self.watches: set[CallbackWatch] = set()
        self.state = _NEW
        self.live = threading.Event()
        self.resync = False  # fire once re-subscribed: notifications may have been missed
        self.check_at: float | None = None


class _Listener:
    """One pub/sub connection and the one thread that owns it.

    Only the listener thread touches the socket (safe with TLS); other threads
    register watches and poke it through a socketpair. It also runs the
    re-checks at owner expiry and the own-session watchdog."""

    def __init__(self, open_socket: Callable[[], socket.socket], recheck: Callable[[tuple[str, str, str]], int],
                 session_left: Callable[[str], float | None], session_gone: Callable[[str], None],
                 dispatcher: Dispatcher, timeout: float):
        self._open = open_socket
        self._recheck = recheck
        self._session_left = session_left
        self._session_gone = session_gone
        self._dispatcher = dispatcher
        self._timeout = timeout
        self._lock = threading.Lock()
        self._targets: dict[bytes, _Target] = {}
        self._dirty: set[bytes] = set()
        self._checks: list[tuple[float, int, _Target]] = []
        self._order = itertools.count()
        self._session: tuple[str, float] | None = None  # own session id, when to check it is alive
        self._sock: socket.socket | None = None
        self._reader = _Reader()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = _Poller()
        self._poller.register(self._wake_r)
        self._closed = False
        self._reconnect = False
        self._last_rx = 0.0
        self._ping_sent: float | None = None
        self._thread = threading.Thread(target=self._run, name="moot-redis-listener", daemon=True)

    def start(self, sock: socket.socket) -> None:
        self._use(sock)
        self._thread.start()

    def _use(self, sock: socket.socket) -> None:
        self._sock, self._reader = sock, _Reader()
        self._poller.register(sock.fileno())
        self._last_rx, self._ping_sent = time.monotonic(), None

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._poke()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(self._timeout)
        if self._sock is not None:
            self._sock.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget(self) -> None:
        """In a forked child: close the inherited descriptors with a plain
        close() and nothing else. No lock is taken (a parent thread may have
        held one at the fork) and no UNSUBSCRIBE is sent."""
        self._closed = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- called from any thread --------------------------------------------
    def watch(self, channel: bytes, scope: tuple[str, str, str] | None, callback: Callable[[], None],
              wait: bool) -> CallbackWatch:
        """Subscribe ``callback`` to ``channel``; with ``wait``, return only once
        the server confirmed the subscription (ConnectionLost if it does not
        within the caller's deadline, bounded by this listener's timeout)."""
        started = time.monotonic()
        bound = remaining(self._timeout) if wait else 0.0

        def forget(watch: CallbackWatch) -> None:
            with self._lock:
                target.watches.discard(watch)
                self._dirty.add(channel)
            self._poke()

        watch = CallbackWatch(callback, forget)
        with self._lock:
            if self._closed:
                raise CoordinatorClosed("this redis backend is closed")
            found = self._targets.get(channel)
            target = found if found is not None else _Target(channel, scope)
            self._targets[channel] = target
            target.watches.add(watch)
            self._dirty.add(channel)
        self._poke()
        if wait and not _wait_set(target.live, bound):
            watch.cancel()
            raise ConnectionLost("redis did not confirm a subscription; gave up after "
                                 f"{time.monotonic() - started:.2f}s")
        return watch

    def reconnect(self) -> None:
        """Drop the connection and open a new one (e.g. to a new primary)."""
        with self._lock:
            self._reconnect = True
        self._poke()

    def watch_session(self, session_id: str | None, deadline: float | None) -> None:
        """Check at ``deadline`` (monotonic) that the own session still exists."""
        with self._lock:
            self._session = None if session_id is None or deadline is None else (session_id, deadline)
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # closed, or full: the listener wakes anyway
            _real_os().write(self._wake_w, b"x")

    # -- the listener thread ---------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            if self._sock is None:
                try:
                    sock = self._open()
                except Exception as exc:  # unreachable, TLS or AUTH failure: retry with backoff
                    log.debug("redis pub/sub reconnect failed: %s", type(exc).__name__)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                self._use(sock)
                backoff = 0.05
            try:
                with self._lock:
                    reconnect, self._reconnect = self._reconnect, False
                if reconnect:
                    raise ConnectionAbortedError("asked to reconnect")
                self._flush()
                self._receive()
                self._keepalive()
            except (OSError, _RespError) as exc:
                log.info("redis pub/sub connection lost (%s); reconnecting", type(exc).__name__)
                self._drop()
            except Exception:  # a bug must not end the thread every watch relies on
                log.exception("redis pub/sub listener failed; reconnecting")
                self._drop()
            self._run_checks()

    def _sleep(self, seconds: float) -> None:
        if self._wake_r in self._poller.poll(seconds):
            self._drain()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):  # empty (non-blocking), or closed
            _real_os().read(self._wake_r, 65536)

    def _send(self, *args: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(_pack(*args))

    def _flush(self) -> None:
        """Send the (un)subscriptions that watch()/cancel() asked for."""
        subscribe: list[bytes] = []
        unsubscribe: list[bytes] = []
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            for channel in dirty:
                target = self._targets.get(channel)
                if target is None:
                    continue
                if target.watches and target.state == _NEW:
                    target.state = _PENDING
                    subscribe.append(channel)
                elif not target.watches and target.state != _PENDING:
                    del self._targets[channel]
                    if target.state == _LIVE:
                        unsubscribe.append(channel)
        if subscribe:
            self._send(b"SUBSCRIBE", *subscribe)
        if unsubscribe:
            self._send(b"UNSUBSCRIBE", *unsubscribe)

    def _next_wait(self, now: float) -> float:
        times = [self._ping_sent + self._timeout if self._ping_sent is not None
                 else self._last_rx + _PING_INTERVAL]
        with self._lock:
            if self._checks:
                times.append(self._checks[0][0])
            if self._session is not None:
                times.append(self._session[1])
        return max(0.0, min(times) - now)

    def _receive(self) -> None:
        sock = self._sock
        assert sock is not None
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        wait = 0.0 if pending else self._next_wait(time.monotonic())
        ready = self._poller.poll(wait)
        if self._wake_r in ready:
            self._drain()
        if sock.fileno() not in ready and not pending:
            return
        data = self._recv(sock)
        if data is None:
            return
        if not data:
            raise ConnectionResetError("the server closed the pub/sub connection")
        self._last_rx, self._ping_sent = time.monotonic(), None
        for reply in self._reader.replies(data):
            self._handle(reply)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes | None:
        """What is readable now; None if a TLS socket had only protocol records
        (e.g. TLS 1.3 session tickets), which would make a blocking recv hang."""
        if not isinstance(sock, ssl.SSLSocket):
            return sock.recv(65536)
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            return sock.recv(65536)
        except ssl.SSLWantReadError:
            return None
        finally:
            sock.settimeout(timeout)

    def _keepalive(self) -> None:
        now = time.monotonic()
        if self._ping_sent is None:
            if now - self._last_rx >= _PING_INTERVAL:
                self._send(b"PING")
                self._ping_sent = now
        elif now - self._ping_sent > self._timeout:
            raise TimeoutError("no answer to PING on the pub/sub connection")

    def _handle(self, reply: object) -> None:
        if isinstance(reply, _RespError):
            log.warning("redis pub/sub error: %s", reply)
            return
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind, channel = reply[0], reply[1]
        if not isinstance(channel, bytes):
            return
        if kind == b"message" and len(reply) == 3 and isinstance(reply[2], bytes):
            self._on_message(channel, reply[2])
        elif kind == b"subscribe":
            self._on_subscribed(channel)

    def _fire(self, watches: Sequence[CallbackWatch]) -> None:
        for watch in watches:
            self._dispatcher.submit(watch.fire)

    def _schedule(self, target: _Target, at: float | None) -> None:
        """Set when ``target`` is re-checked (lock held)."""
        target.check_at = at
        if at is not None:
            heapq.heappush(self._checks, (at, next(self._order), target))

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        with self._lock:
            target = self._targets.get(channel)
            if target is None:
                return
            watches = list(target.watches)
            owner, _, ms = payload.partition(b":")
            own = self._session[0].encode() if self._session else None
            if target.scope is not None and ms and owner != own:
                at = time.monotonic() + int(ms) / 1000 + _MARGIN
                if target.check_at is None or at < target.check_at:
                    self._schedule(target, at)
        self._fire(watches)

    def _on_subscribed(self, channel: bytes) -> None:
        with self._lock:
            target = self._targets.get(channel)
            if target is None or target.state != _PENDING:
                return
            target.state = _LIVE
            target.live.set()
            if target.scope is not None:
                self._schedule(target, time.monotonic())
            if not target.watches:
                self._dirty.add(channel)
            watches = list(target.watches) if target.resync else []
            target.resync = False
        self._fire(watches)

    def _drop(self) -> None:
        """Forget the broken connection; every watch is re-subscribed and fires then."""
        if self._sock is not None:
            self._poller.unregister(self._sock.fileno())
            self._sock.close()
        self._sock = None
        with self._lock:
            for channel, target in list(self._targets.items()):
                if not target.watches:
                    del self._targets[channel]
                    continue
                target.state = _NEW
                target.live.clear()
                target.resync = True
                target.check_at = None
                self._dirty.add(channel)
            self._checks.clear()

    def _run_checks(self) -> None:
        now = time.monotonic()
        due: list[_Target] = []
        with self._lock:
            while self._checks and self._checks[0][0] <= now:
                when, _, target = heapq.heappop(self._checks)
                if target.check_at == when and self._targets.get(target.channel) is target:
                    target.check_at = None
                    due.append(target)
            session = self._session if self._session is not None and self._session[1] <= now else None
        for target in due:
            assert target.scope is not None
            at: float | None = time.monotonic() + 0.5  # retried if the re-check fails
            try:
                ms = self._recheck(target.scope)
            except (BackendError, CoordinatorClosed):
                pass
            except Exception:
                log.exception("redis watch re-check failed")
            else:
                at = None if ms < 0 else time.monotonic() + ms / 1000 + _MARGIN
            with self._lock:
                if target.check_at is None or (at is not None and at < target.check_at):
                    self._schedule(target, at)
        if session is not None:
            self._check_session(session[0])

    def _check_session(self, session_id: str) -> None:
        try:
            left = self._session_left(session_id)
        except (BackendError, CoordinatorClosed):
            left = 0.5
        with self._lock:
            if self._session is None or self._session[0] != session_id:
                return
            self._session = None if left is None else (session_id, time.monotonic() + left + _MARGIN)
            watches = [w for t in self._targets.values() for w in t.watches] if left is None else []
        if left is None:
            self._fire(watches)
            self._session_gone(session_id)


def _left(until: float, cap: float | None = None) -> float:
    """Seconds until ``until`` (at most ``cap``); TimeoutError once it passed."""
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("the server did not answer in time")
    return left if cap is None else min(left, cap)


def _exchange(sock: socket.socket, payload: bytes, count: int, until: float) -> list[object]:
    """Send ``payload`` (``count`` commands) and read their ``count`` replies,
    every step bounded by ``until``; OSError (TimeoutError once ``until``
    passed) if the server cannot be reached or does not answer in time."""
    set_at = time.monotonic()
    sock.settimeout(_left(until))
    sock.sendall(payload)
    reader = _Reader()
    replies: list[object] = []
    while len(replies) < count:
        now = time.monotonic()
        if now - set_at > 0.001:  # else the timeout set just before is still right, within 1 ms
            set_at = now
            sock.settimeout(_left(until))
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        replies += reader.replies(data)
    if len(replies) != count or reader.buf:
        raise ConnectionResetError("redis sent more replies than commands")
    return replies


class _AuthFailed(Exception):
    """The server refused the credentials (not retryable: BackendError)."""


class _NoConnection(TimeoutError):
    """Every pooled connection stayed busy until the call's deadline."""


_SELECT: Any = select if hasattr(select, "poll") else None  # taken before any monkey-patching


def _real_select() -> Any:
    """The OS's ``select`` module with its ``poll()``, also under
    ``eventlet.monkey_patch()`` (which deletes ``select.poll``; eventlet keeps
    the original module). None where the OS has no poll()."""
    global _SELECT
    if _SELECT is None and "eventlet" in sys.modules:
        with contextlib.suppress(Exception):
            original = importlib.import_module("eventlet.patcher").original("select")
            _SELECT = original if hasattr(original, "poll") else None
    return _SELECT


def _real_os() -> Any:
    """``os`` with the OS's own read() and write(): under
    ``eventlet.monkey_patch()`` they would wait in eventlet's hub instead of
    failing at once on an empty or full non-blocking pipe."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("os"):
        return patcher.original("os")
    return os


def _green() -> bool:
    """True in a process that eventlet monkey-patched (threads are green there)."""
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))


def _pause(until: float, pause: float) -> float:
    """Sleep ``pause`` (never past ``until``); the next, longer pause. A green
    thread yields to eventlet's hub meanwhile (``time.sleep`` is patched there)."""
    time.sleep(max(0.0, min(pause, until - time.monotonic())))
    return min(pause * 2, 0.02)


def _wait_set(event: threading.Event, timeout: float) -> bool:
    """``event.wait(timeout)``, without blocking eventlet's hub when the
    caller is a green thread (the event is a real one, set by a real thread)."""
    if not _green():
        return event.wait(timeout)
    until, pause = time.monotonic() + timeout, 0.0005
    while not event.is_set():
        if time.monotonic() >= until:
            return False
        pause = _pause(until, pause)
    return True


class _Poller:
    """Waits until descriptors are readable, with the OS's poll() (outside
    eventlet's hub, for the listener's real OS thread; no descriptor limit),
    or with a selector where there is no poll()."""

    def __init__(self) -> None:
        real = _real_select()
        self._poll = real.poll() if real is not None else None
        self._in = real.POLLIN if real is not None else 0
        self._selector = selectors.DefaultSelector() if real is None else None

    def register(self, fd: int) -> None:
        if self._poll is not None:
            self._poll.register(fd, self._in)
        else:
            assert self._selector is not None
            self._selector.register(fd, selectors.EVENT_READ)

    def unregister(self, fd: int) -> None:
        if self._poll is not None:
            self._poll.unregister(fd)
        else:
            assert self._selector is not None
            self._selector.unregister(fd)

    def poll(self, timeout: float) -> set[int]:
        """The registered descriptors readable within ``timeout`` seconds."""
        if self._poll is not None:
            return {fd for fd, _ in self._poll.poll(math.ceil(max(timeout, 0.0) * 1000))}
        assert self._selector is not None
        return {key.fd for key, _ in self._selector.select(max(timeout, 0.0))}


def _readable(sock: socket.socket) -> bool:
    """True if an idle connection has something to read: the server closed it
    (or sent what nobody asked for). Never blocks."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
        return True
    real = _real_select()
    if real is not None:  # not select(): descriptors may exceed 1024
        poller = real.poll()
        poller.register(sock.fileno(), real.POLLIN)
        return bool(poller.poll(0))
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(0))


class _Pool:
    """The command connections: at most ``size`` at once, each a plain socket
    opened (TLS, AUTH, SELECT) by ``open_socket(until)``. A connection is used
    by one call at a time and kept for the next one unless anything went
    wrong on it (a reply is never awaited twice, and a command whose reply
    was lost is never sent again)."""

    def __init__(self, open_socket: Callable[[float], socket.socket], size: int):
        self._open = open_socket
        self._size = size
        self._lock = threading.Lock()  # real (see moot.realthreads), held for no I/O
        self._idle: list[socket.socket] = []
        self._born: dict[socket.socket, int] = {}  # every open connection -> its generation
        self._opening = 0  # slots taken by connections being opened
        self._generation = 0
        self._closed = False

    def run(self, payload: bytes, count: int, until: float) -> list[object]:
        """``count`` replies to ``payload``, all within ``until`` (monotonic)."""
        sock = self._checkout(until)
        try:
            replies = _exchange(sock, payload, count, until)
        except BaseException:
            self._discard(sock)
            raise
        with self._lock:
            keep = not self._closed and self._born.get(sock) == self._generation
            if keep:
                self._idle.append(sock)
        if not keep:
            self._discard(sock)
        return replies

    def _checkout(self, until: float) -> socket.socket:
        pause = 0.0005
        while True:
            with self._lock:
                if self._closed:
                    raise ConnectionAbortedError("the backend is closed")
                full = not self._idle and len(self._born) + self._opening >= self._size
                if not full and self._idle:
                    sock = self._idle.pop()
                elif not full:
                    self._opening += 1
                    generation = self._generation
                    break
            if full:  # rare (max_connections calls at once): polled, so that no hub blocks
                if time.monotonic() >= until:
                    raise _NoConnection(f"all {self._size} connections stayed busy (max_connections)")
                pause = _pause(until, pause)
                continue
            if not _readable(sock):
                return sock
            self._discard(sock)
        try:
            sock = self._open(until)
        except BaseException:
            with self._lock:
                self._opening -= 1
            raise
        with self._lock:
            self._opening -= 1
            current = generation == self._generation and not self._closed
            if current:
                self._born[sock] = generation
        if current:
            return sock
        with contextlib.suppress(OSError):  # opened to the server that was just left
            sock.close()
        raise ConnectionAbortedError("the connection was dropped by a failover")

    def _discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._born.pop(sock, None)
        with contextlib.suppress(OSError):
            sock.close()

    def disconnect(self) -> None:
        """Leave the server now (a failover): idle connections are closed, and
        those in use are shut down (their calls fail at once) and closed."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
            for sock in idle:
                self._born.pop(sock, None)
            busy = list(self._born)
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()
        for sock in busy:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the idle connections; those in use close when their call ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for sock in idle:
                self._born.pop(sock, None)
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()

    def forget(self) -> None:
        """In a forked child: plain close() of every inherited connection,
        without taking the lock (a parent thread may have held it at the fork)."""
        self._closed = True
        for sock in list(self._born):
            with contextlib.suppress(OSError):
                sock.close()
        self._born, self._idle = {}, []

    def sockets(self) -> builtins.list[socket.socket]:
        """The open connections (for tests and diagnostics)."""
        with self._lock:
            return list(self._born)


#: Connected backends, so that a forked child forgets them all (see "Fork").
_CONNECTED: weakref.WeakSet[RedisBackend] = weakref.WeakSet()


def _forget_in_child() -> None:
    for backend in list(_CONNECTED):
        try:
            backend.forget_after_fork()
        except Exception:  # the fork itself must go on
            log.debug("forgetting a redis backend after fork failed", exc_info=True)


os.register_at_fork(after_in_child=_forget_in_child)


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
    """Primitives over one Redis server; see the module docstring."""

    OPTIONS = frozenset({"socket_timeout", "max_connections", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                         "ssl_cert_reqs", "sentinel_password"})

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        path = [part for part in url.path.split("/") if part]
        self._service: str | None = None  # the Sentinel service name of redis+sentinel://
        if url.scheme == "redis+sentinel":
            if not url.hosts or not 1 <= len(path) <= 2:
                raise InvalidURL(f"{url.redacted()}: write redis+sentinel://host:port[,host:port...]/service[/db]")
            self._service = path.pop(0)
            self._sentinels = [url.host_port(26379, i) for i in range(len(url.hosts))]
        elif len(url.hosts) > 1:
            raise InvalidURL(f"{url.redacted()}: {url.scheme}:// takes one host:port "
                             "(redis+sentinel:// takes several)")
        self._host, self._port = url.host_port(6379)
        db_text = path[0] if path else "0"
        if len(path) > 1 or not db_text.isdigit():
            raise InvalidURL(f"{url.redacted()}: the path must be a database number, e.g. /0")
        self._db = int(db_text)
        self._channels = f"{KP}{self._db}:"
        self._socket_timeout = option_float(options, "socket_timeout", 5.0, maximum=3600)
        self._max_connections = int(option_float(options, "max_connections", 50, minimum=1, allow_equal=True,
                                                 maximum=10_000))
        self._tls: ssl.SSLContext | None = None
        if url.scheme == "rediss":
            self._tls = _tls(options)
        self._connect_timeout = self._socket_timeout
        self._session: tuple[str, int] | None = None  # id, ttl in ms
        self._notices: Watch | None = None
        self._closed = False
        self._forked = False
        self._connected = False
        self._pool: _Pool | None = None
        self._listener: _Listener | None = None
        self._switches: _Listener | None = None
        self._dispatcher: Dispatcher | None = None
        self._kp, self._cp = KP.encode(), self._channels.encode()
        self._scripts = {name: (_COMMON + body).encode() for name, body in _SCRIPTS.items()}
        self._shas = {name: hashlib.sha1(body).hexdigest().encode() for name, body in self._scripts.items()}

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url.redacted()}>"

    # -- lifecycle --------------------------------------------------------
    def connect(self, timeout: float) -> None:
        if self._forked:  # inherited across fork() and forgotten: start afresh
            self._forked = self._closed = False
        self._check_open()
        started = time.monotonic()
        self._connect_timeout = timeout
        with bounded(started + timeout), self._translated(started):
            self._pool = _Pool(self._open_command, self._max_connections)
            self._run([b"PING"])
            sock = self._open_pubsub()
            self._dispatcher = Dispatcher("moot-redis-watch")
            listen_timeout = max(timeout, self._socket_timeout)
            self._listener = _Listener(self._open_pubsub, self._recheck, self._session_left, self._session_gone,
                                       self._dispatcher, listen_timeout)
            self._listener.start(sock)
            self._connected = True
            _CONNECTED.add(self)
            if self._service is not None:
                self._switches = _Listener(self._open_sentinel, self._recheck, self._session_left,
                                           self._session_gone, self._dispatcher, listen_timeout)
                self._switches.start(self._open_sentinel())
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
        _CONNECTED.discard(self)
        for listener in (self._listener, self._switches):
            if listener is not None:
                listener.close()
        if self._dispatcher is not None:
            self._dispatcher.close()
        if self._pool is not None:
            self._pool.close()

    def forget_after_fork(self) -> None:
        """Drop, without any I/O, every connection, the pool, the listeners
        and the session inherited from the parent (see "Fork" above): the
        inherited sockets get a plain close() and nothing else."""
        self._forked = self._closed = True
        self._connected = False
        self._session, self._notices = None, None
        self.granted_ttl = None
        _CONNECTED.discard(self)
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
        host, port = self._address(time.monotonic() + remaining(self._socket_timeout))
        where = f" (primary of Sentinel service {self._service!r})" if self._service else ""
        return f"redis {_info_field(info, b'redis_version')} at {host}:{port}{where}"

    # -- connections ------------------------------------------------------
    def _address(self, until: float) -> tuple[str, int]:
        """Where the server is now: for redis+sentinel://, the primary that the
        first Sentinel which answers names (and does not see down)."""
        if self._service is None:
            return self._host, self._port
        password = self.options.get("sentinel_password")
        error: Exception = ConnectionRefusedError("no Sentinel answered")
        for host, port in self._sentinels:
            try:
                sock = self._dial(host, port, None, None, None if password is None else str(password), until)
                try:
                    (reply,) = _exchange(sock, _pack(b"SENTINEL", b"MASTER", self._service.encode()), 1, until)
                finally:
                    sock.close()
            except (OSError, _AuthFailed, _RespError, ValueError) as exc:
                error = exc
                continue
            if not isinstance(reply, list):
                error = ConnectionRefusedError(f"Sentinel {host}:{port} answered {reply}")
                continue
            fields = dict(zip(reply[::2], reply[1::2], strict=False))
            flags = set(bytes(fields.get(b"flags") or b"").split(b","))
            if b"master" in flags and not flags & {b"s_down", b"o_down", b"disconnected"}:
                return bytes(fields[b"ip"]).decode(), int(fields[b"port"])
            error = ConnectionRefusedError(f"Sentinel {host}:{port} sees the primary of {self._service!r} down")
        if isinstance(error, _AuthFailed):
            raise ConnectionRefusedError(f"a Sentinel refused the credentials: {error}")
        raise error

    def _dial(self, host: str, port: int, tls: ssl.SSLContext | None, username: str | None,
              password: str | None, until: float, *setup: builtins.list[bytes]) -> socket.socket:
        """A new connection, with its TLS and AUTH handshake and the ``setup``
        commands (whose error replies are ignored), all within ``until``."""
        sock = socket.create_connection((host, port), timeout=_left(until, self._connect_timeout))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock.settimeout(_left(until))
                sock = tls.wrap_socket(sock, server_hostname=host)
            commands = list(setup)
            if password is not None:
                commands.insert(0, [b"AUTH", *([username.encode()] if username else []), password.encode()])
            if commands:
                replies = _exchange(sock, b"".join(_pack(*c) for c in commands), len(commands), until)
                if password is not None and isinstance(replies[0], _RespError):
                    raise _AuthFailed(str(replies[0]))
                for command, reply in zip(commands, replies, strict=True):
                    if isinstance(reply, _RespError) and command[0] == b"SELECT":
                        raise reply
            sock.settimeout(self._socket_timeout)
            return sock
        except BaseException:
            sock.close()
            raise

    def _open_command(self, until: float) -> socket.socket:
        """A new command connection (the pool's), within ``until``."""
        until = min(until, time.monotonic() + self._connect_timeout)
        host, port = self._address(until)
        setup = [[b"CLIENT", b"SETNAME", b"moot"]]
        if self._db:
            setup.insert(0, [b"SELECT", b"%d" % self._db])
        return self._dial(host, port, self._tls, self.url.username, self.url.password, until, *setup)

    def _open_pubsub(self) -> socket.socket:
        """A new authenticated connection for the listener (TLS if rediss://)."""
        until = time.monotonic() + remaining(self._connect_timeout)
        host, port = self._address(until)
        return self._dial(host, port, self._tls, self.url.username, self.url.password, until,
                          [b"CLIENT", b"SETNAME", b"moot-watch"])

    def _open_sentinel(self) -> socket.socket:
        """A connection to the first Sentinel that answers, to hear of failovers."""
        until = time.monotonic() + remaining(self._connect_timeout)
        password = self.options.get("sentinel_password")
        error: Exception = ConnectionRefusedError("no Sentinel answered")
        for host, port in self._sentinels:
            try:
                return self._dial(host, port, None, None, None if password is None else str(password), until,
                                  [b"CLIENT", b"SETNAME", b"moot-watch"])
            except (OSError, _AuthFailed) as exc:
                error = exc
        raise error

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

    def _lost(self, exc: BaseException, started: float) -> ConnectionLost:
        """The ConnectionLost for ``exc``, stating the time really spent."""
        elapsed = time.monotonic() - started
        if isinstance(exc, ConnectionRefusedError):
            what = f"refused the connection ({exc})"
        elif isinstance(exc, TimeoutError):
            what = f"did not answer in time ({exc or 'timed out'})"
        elif isinstance(exc, _RespError | ValueError):
            what = f"sent a reply that is not RESP ({exc})"
        else:
            what = f"is unreachable ({exc or type(exc).__name__})"
        return ConnectionLost(f"redis at {self.url.redacted()} {what}; gave up after {elapsed:.2f}s")

    @contextlib.contextmanager
    def _translated(self, started: float) -> Iterator[None]:
        """Raise only moot errors out of the block."""
        try:
            yield
        except _AuthFailed as exc:
            raise BackendError(f"redis at {self.url.redacted()} refused the credentials: {exc}") from None
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
            return pool.run(b"".join(_pack(*c) for c in commands), len(commands), until)
        except _AuthFailed as exc:
            raise BackendError(f"redis at {self.url.redacted()} refused the credentials: {exc}") from None
        except (OSError, _RespError, ValueError) as exc:
            if self._closed:
                raise CoordinatorClosed("this redis backend is closed") from None
            raise self._lost(exc, started) from None

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
            raise BackendError(f"redis at {self.url.redacted()} answered: {reply}")
        return reply

    def _checked(self, reply: object) -> Any:
        """``reply``, or BackendError if it is an error reply."""
        if isinstance(reply, _RespError):
            raise BackendError(f"redis at {self.url.redacted()} answered: {reply}")
        return reply

    # -- session ----------------------------------------------------------
    def _session_key(self, session_id: str) -> str:
        return f"{KP}s:{session_id}"

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
        raw = self._eval("get", [dir_key(directory)], [directory, leaf])
        return _entry(key.encode(), raw) if raw else None

    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        owner = self._owner(ephemeral)
        directory, leaf = split_key(key)
        raw = self._eval("create", [dir_key(directory)], [directory, leaf, owner, bytes(value)])
        return _entry(key.encode(), raw) if raw else None

    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        directory, leaf = split_key(key)
        raw = self._eval("cas", [dir_key(directory)], [directory, leaf, str(version), bytes(value)])
        return _entry(key.encode(), raw) if raw else None

    def delete(self, key: str, version: int | None = None) -> bool:
        directory, leaf = split_key(key)
        version_text = "" if version is None else str(version)
        return bool(self._eval("delete", [dir_key(directory)], [directory, leaf, version_text]))

    def list(self, prefix: str) -> list[Entry]:
        flat = self._eval("list", [], [prefix])
        return sorted((_entry(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)), key=lambda e: e.key)

    def _sequential(self, prefix: str, value: bytes, ephemeral: bool, with_list: bool) -> builtins.list[Entry]:
        owner = self._owner(ephemeral)
        flat = self._eval("sequential", [dir_key(prefix)], [prefix, owner, bytes(value), "1" if with_list else "0"])
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
            scope = (dir_key(key), key, "")
        else:
            directory, leaf = split_key(key)
            scope = (dir_key(directory), directory, leaf)
        listener = self._listener
        if listener is None:
            raise CoordinatorClosed("this redis backend is not connected")
        return listener.watch(f"{self._channels}{key}".encode(), scope, callback, wait=True)

    def _recheck(self, scope: tuple[str, str, str]) -> int:
        """Remove dead entries in ``scope``; ms until its first foreign owner expires, -1 if none."""
        session = self._session
        dkey, directory, leaf = scope
        return int(self._eval("recheck", [dkey], [directory, leaf, session[0] if session else ""]))


def _tls(options: dict[str, object]) -> ssl.SSLContext:
    """The TLS context of every connection of a ``rediss://`` backend."""
    ca = str(options.get("ssl_ca_certs") or "") or None
    cert = str(options.get("ssl_certfile") or "") or None
    key = str(options.get("ssl_keyfile") or "") or None
    reqs = str(options.get("ssl_cert_reqs", "required"))
    modes = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
    if reqs not in modes:
        raise InvalidURL(f"option ssl_cert_reqs={reqs!r} must be one of: required, optional, none")
    try:
        context = ssl.create_default_context(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidURL(f"cannot load the TLS files given in the options: {exc}") from None
    context.check_hostname = reqs == "required"
    context.verify_mode = modes[reqs]
    return context
