"""``zookeeper://[user:password@]host:port[,host:port...][/chroot]`` (alias
``kazoo://``): ZooKeeper through kazoo.

Needs ZooKeeper 3.5 or newer (3.6+ lists a level in one request); install
with ``pip install 'moot[zookeeper]'``. Keys live under the chroot (default
``/moot``). ``user:password@`` logs in with the ``digest`` scheme and makes
every znode moot creates readable and writable by that identity only.
Options: ``ttl`` (the session timeout asked, in seconds), the coordinator's
``timeout`` (the most one call may take, default 10 s), and the TLS options
of :mod:`moot.backends._support.tls` (``tls=true`` for the server's secure
client port, ``ca_cert``, ``cert``, ``key``, ``verify``): moot makes the TLS
connections itself, with that SSL context, and checks each server's
certificate against the host name as the URL gives it.
kazoo's own log goes to ``moot.backends.zookeeper.kazoo`` with every
credential hidden and its warnings (one per reconnection try) lowered to
INFO: moot reports what came of them itself, once.

Guarantees (how they are kept: ``docs/design/zookeeper.md``):

* Every primitive, waiting for a reconnection included, returns or raises
  within the caller's deadline (:mod:`moot.deadline`), at most ``timeout``,
  plus a few milliseconds; ConnectionLost states the time it took.
  ``connect`` fails at once when every host refuses or no host resolves,
  with TLSFailed when every host fails the TLS handshake for a reason a retry
  cannot fix (or refuses), and with AuthenticationFailed when the chroot's
  ACLs leave out the URL's identity (a wrong password is another identity:
  ZooKeeper takes any digest login).
* A session is a native ZooKeeper session whose timeout is the TTL less one
  tick of the server (read at connect), as bounded by the server
  (``minSessionTimeout``/``maxSessionTimeout``): the server expires sessions
  on its ticks, so a crashed holder's session ends within the TTL.
  ``granted_ttl`` is what the server granted, logged once when it differs
  from what was asked. kazoo pings the server by itself.
* ``refresh_session`` succeeds only if the server has heard from the
  ensemble's leader after the call started; an ended session (expired, or
  evicted by ``expire_session``) is reported as SessionExpired, also when the
  connection dropped because of it.
* ``expire_session`` ends any moot session for real, as an expiry would: its
  ephemeral keys go and watchers are called. Any client that can read the
  chroot can do so: restrict it with credentials on a shared ensemble.
* Fencing tokens (``seq``, the creation's ``czxid``) grow strictly for ever,
  even if the tree is deleted; versions (``mzxid``) are never reused. A
  creation whose reply was lost never leaves a phantom queue entry.
* A released lock (semaphore, election) leaves no znode behind: its name's
  and queue's parent znodes are removed once empty, 10 s after its last
  release in this process or at ``close()``, off the caller's path; a
  queue with anyone in it is never removed (the server refuses).
* Watches are called once after every reconnection; a watched key's
  deletion calls back without waiting for a round trip.
* Values over :data:`moot.backends.base.MAX_VALUE_BYTES` raise
  InvalidArgument before any I/O.
* In a forked child, every inherited backend closes its copies of the
  sockets without any I/O and every primitive raises ConnectionLost; the
  parent's session carries on.
* Works under ``eventlet.monkey_patch()`` (kazoo runs on real threads; green
  callers never block the hub).
"""

from moot.backends.zookeeper.backend import ZooKeeperBackend

__all__ = ["ZooKeeperBackend"]
