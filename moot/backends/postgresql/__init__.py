"""``postgresql://[user[:password]@]host[:port][/database]`` (alias ``postgres://``).

Needs PostgreSQL 14 or newer; install with ``pip install 'moot[postgresql]'``
(psycopg 3). The database defaults to the user's name, else ``postgres``.
Options: ``schema`` (where moot keeps its tables, default ``moot``; also
the NOTIFY channel: give each application its own to keep them apart),
``socket_timeout`` (the most one call may take, in seconds, default 5;
also the server's ``statement_timeout`` for moot's connections),
``max_connections`` (command connections, default 20: one is kept, more
are opened only for calls made at once; one more listens while anything is
watched),
and the TLS options of :mod:`moot.backends._support.tls` (``tls``,
``ca_cert``, ``cert``, ``key``, ``verify``) with libpq's spellings as
aliases: ``sslrootcert``, ``sslcert``, ``sslkey``. ``tls=true`` is libpq's
``sslmode=verify-full`` (``require`` with ``verify=false``); without it
the connection is plain (``sslmode=disable``).

Schema: created on first use (``CREATE ... IF NOT EXISTS``, one client at
a time under an advisory lock): a sequence, the tables ``sessions``,
``entries`` and ``meta``, and the functions every write runs (see
:mod:`moot.backends.postgresql.schema`). A role that may not create them
gets a PermissionDenied whose message lists the statements an administrator
runs for it; so does a role refused another tenant's schema or database
(docs/security.md).

Guarantees (how they are kept: ``docs/design/postgresql.md``):

* Keys are text primary keys: distinct names never share a lock (no
  hashing), and one client may hold any number of locks.
* Sessions are rows with an expiry judged by the server's clock; the
  session is never ended before a refresh's start plus ``granted_ttl``
  (exact: the TTL asked, in ms). An entry whose owner session expired is
  absent to every reader, and is removed (with its whole session) by the
  first live client that needs its key, or by a watcher of it.
* Versions and fencing tokens (``seq``) come from one bigint SEQUENCE:
  they only grow, across client restarts and server restarts or crashes
  (a crash may skip up to 32 values).
* Every write is one function call in its own transaction, committed with
  the server's durability settings (``synchronous_commit`` is left as the
  server has it), and NOTIFYs its watchers in that same transaction. A
  watcher of an entry whose owner expires is woken a few milliseconds
  after the expiry, without polling; every watch fires once after a lost
  LISTEN connection is re-established.
* Every primitive returns or raises ConnectionLost (stating the time spent)
  within :func:`moot.deadline.remaining` of ``socket_timeout``
  (``connect()`` within its ``timeout``), even against a stopped server.
* In a forked child, every inherited backend forgets its connections and
  session without any I/O and is closed until ``connect()`` is called again.
* Works under ``eventlet.monkey_patch()`` (a green caller waits in the hub;
  the listener is a real thread).
* Not supported: several hosts in one URL; PgBouncer in transaction
  pooling mode (LISTEN needs a session).
"""

from moot.backends.postgresql.backend import PostgreSQLBackend

__all__ = ["PostgreSQLBackend"]
