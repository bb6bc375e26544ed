"""``memcached://host[:port]``: one memcached server, 1.6 or newer (the meta protocol).

Needs no client package: the backend speaks memcached's meta protocol over
its own sockets (docs/design/memcached.md says why). Options:
``socket_timeout`` (the most one call may take, in seconds, default 5),
``max_connections`` (command connections, default 50), ``poll_interval``
(the longest pause between two polls of what is watched, default 0.025 s),
and the TLS options of :mod:`moot.backends._support.tls` (``tls``,
``ca_cert``, ``cert``, ``key``, ``verify``) for a server built with TLS.
``user:password@`` is sent only if the server asks for a login (run with
``-Y``).

Run the server as moot needs it: a dedicated instance with ``-M`` (refuse
to store when full, never evict) and memory to spare (``-m``). moot keeps
no data elsewhere: a restart of the server ends every session and loses
every lock, membership and counter.

Guarantees (how they are kept: ``docs/design/memcached.md``):

* Every key directly under one directory lives in one item, changed only
  under its CAS value: create-if-absent, compare-and-set, compare-and-delete
  and the sequence are atomic; a release is a compare-and-delete, never a
  blind delete.
* A session is an item whose expiry is ``ceil(ttl) + 2`` seconds (memcached
  counts whole seconds on a clock that ticks once a second), so memcached
  never ends it before the start of the last successful open or refresh
  plus ``granted_ttl`` (= ``ttl``, at most 30 days); a dead holder's
  entries are gone to every reader within ``ceil(ttl) + 2`` seconds.
* Fencing tokens (``seq``) grow strictly per prefix while the server keeps
  its data, and across a restart of the server provided the clocks of the
  clients' hosts do not lag, across the restart, the last token issued
  before it (tokens are at least the writer's clock in microseconds).
* Watches are polled (one pipelined round trip per round for everything a
  backend object watches); this object's own writes wake its watchers at once.
* Every primitive returns or raises ConnectionLost (stating the time spent)
  within :func:`moot.deadline.remaining` of ``socket_timeout``.
* In a forked child, every inherited backend forgets its connections and
  session without any I/O and is closed until ``connect()`` is called again.
* Works under ``eventlet.monkey_patch()`` (the poller is a real thread with
  real sockets).
* Not kept: anything across the loss of the server's data (a restart, an
  eviction without ``-M``, ``flush_all``): holders learn of it on their next
  refresh, but a new holder may be served before that (fencing tokens still
  grow).
"""

from moot.backends.memcached.backend import MemcachedBackend

__all__ = ["MemcachedBackend"]
