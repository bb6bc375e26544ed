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

from moot.backends.redis.backend import RedisBackend
from moot.backends.redis.scripts import dir_key, split_key

__all__ = ["RedisBackend", "dir_key", "split_key"]
