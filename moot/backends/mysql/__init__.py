"""``mysql://[user[:password]@]host[:port][,host:port...]/database``: MySQL or MariaDB (InnoDB), also a Galera cluster.

Install with ``pip install 'moot[mysql]'`` (PyMySQL). Options:
``socket_timeout`` (the most one call may take, in seconds, default 5),
``max_connections`` (pooled connections, default 20), ``poll_interval``
(the longest pause between two polls of the watched directories, default
0.02 s), ``table_prefix`` (default ``moot_``; at most 32 of
``[A-Za-z0-9_]``), and the TLS options of :mod:`moot.backends._support.tls`
(``tls``, ``ca_cert``, ``cert``, ``key``, ``verify``) with PyMySQL's
spellings as aliases: ``ssl_ca``, ``ssl_cert``, ``ssl_key``,
``ssl_verify_cert``. The tables (``<prefix>sessions``, ``<prefix>counters``,
``<prefix>entries``) are created on first use; a user that may not create
them gets a PermissionDenied with the statements to have an administrator run
(so does a user refused the database or a table: docs/security.md).
The user then needs SELECT, INSERT, UPDATE and DELETE on them.

Guarantees (how they are kept: ``docs/design/mysql.md``):

* Time is the server's clock: a session ends when the server's clock passes
  its expiry, set from the server's clock by each ``open_session`` and
  ``refresh_session`` (one UPDATE); ``granted_ttl`` is the TTL asked, to the
  microsecond.
* An entry of an expired session is absent to every reader; the write that
  needs its place, or the re-check of a watched directory, deletes it.
* ``seq`` (fencing tokens) and versions grow strictly per directory, from a
  counter row that every write of the directory locks, floored on the
  server's clock in microseconds (so they grow also after the tables were
  lost, if the clock did not go back); on Galera too, where two nodes'
  writes of one directory conflict and one is retried.
* Every primitive is one round trip (``enqueue``: create and list), returns
  or raises ConnectionLost (stating the time spent) within
  :func:`moot.deadline.remaining` of ``socket_timeout``; deadlocks and Galera
  certification failures are retried within that time.
* Watches poll the counters of the watched directories (one statement per
  poll for all of them), every 2 ms after a change doubling up to
  ``poll_interval``; a write made by a backend of the same process wakes its
  watchers at once; the end of an owner session wakes them a few ms after
  its expiry. On a single server (not Galera) the delete of a queue entry
  also wakes its watchers at once, through the entry's wake-up hint (a
  ``GET_LOCK`` name its maker holds; a hint only wakes: nothing relies on
  it for exclusion), and such a watch is polled at ``poll_interval``.
* Several hosts: a connection that cannot be opened moves on to the next
  host. On Galera every read waits for the node to be in sync
  (``wsrep_sync_wait=1``); no node-local lock is used for exclusion.
* In a forked child, every inherited backend forgets its connections and
  session without any I/O. Works under ``eventlet.monkey_patch()``.
"""

from moot.backends.mysql.backend import MySQLBackend

__all__ = ["MySQLBackend"]
