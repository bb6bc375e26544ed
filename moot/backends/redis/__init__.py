"""``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS),
``redis+sentinel://[[user]:password@]sentinel:port[,sentinel:port...]/service[/db]``
and ``rediss+sentinel://`` (TLS to the Sentinels and to the primary, with the
same options; ``redis+sentinel://...?tls=true`` is the same).

Needs Redis 5.0 or newer (scripts replicate their effects, so they may read
the server's clock); install with ``pip install 'moot[redis]'``. Options:
``socket_timeout`` (the most one call may take, in seconds, default 5),
``max_connections`` (command connections, default 50),
``sentinel_password`` (for the Sentinels, if they need one), ``prefix``
(the root: every key and pub/sub channel starts with it, default
``moot:``; 1 to 64 of ``[A-Za-z0-9_.:/-]``), and the TLS
options of :mod:`moot.backends._support.tls` (``tls``, ``ca_cert``,
``cert``, ``key``, ``verify``; ``rediss://`` implies ``tls=true``) with
redis-py's spellings as aliases: ``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_cert_reqs`` (required, optional or none). An ACL user
needs the keys ``~<prefix>*``, the channels ``&<prefix>*`` and the commands
(docs/security.md gives the ACL SETUSER line) EVALSHA, SCRIPT LOAD, PEXPIRE, PTTL, HGET, HSET, HGETALL, HDEL, DEL, ZADD,
ZRANGEBYLEX, PUBLISH, TIME (the last seven run inside the scripts), MULTI,
EXEC, SELECT, SUBSCRIBE, UNSUBSCRIBE, PING and INFO; a refusal is
PermissionDenied.

Guarantees (how they are kept: ``docs/design/redis.md``):

* Fencing tokens (``seq``) grow strictly per prefix, across client restarts
  and after the server lost its data, provided the issuing server's clock
  does not go back across the loss by more than the time between the last
  token before it and the first after it, and tokens are issued on one
  prefix at no more than 1,000,000 per second on average.
* An ephemeral entry is gone, to every reader, once its owner session has
  expired; a watcher of it is woken a few milliseconds after that expiry.
  A watch fires once after a lost pub/sub connection is re-established.
* Every primitive returns or raises ConnectionLost (stating the time spent)
  within :func:`moot.deadline.remaining` of ``socket_timeout``
  (``connect()`` within its ``timeout``); a refused connection fails at once.
* A session key always expires: its TTL is an int of ms in [1, 2**31 - 1]
  (``granted_ttl`` says when it was cut); ``refresh_session()`` is one
  ``PEXPIRE``, never resent.
* In a forked child, every inherited backend forgets its connections and
  session without any I/O and is closed until ``connect()`` is called again.
* Works under ``eventlet.monkey_patch()`` (real threads and locks inside).
* Sentinel: commands go to the primary the Sentinels name; on a failover
  every connection to the old primary is dropped at once. Replication is
  asynchronous: a failover may lose a hold acknowledged just before it.
* Not supported: Redis Cluster. Run the server with
  ``maxmemory-policy noeviction``.
"""

from moot.backends.redis.backend import RedisBackend
from moot.backends.redis.scripts import dir_key, split_key

__all__ = ["RedisBackend", "dir_key", "split_key"]
