"""One tooz driver class per moot backend, each stating what tooz calls its
``CHARACTERISTICS`` truthfully for that engine (tooz callers may demand them:
``get_coordinator(url, member, characteristics=[...])``).

Every class is distributed across threads (one coordinator is thread-safe).
Beyond that:

* across processes: every backend but ``memory://`` (one process);
* across hosts: every server backend (not ``file://``, one host);
* ``NON_TIMEOUT_BASED``: only ``file://``, where the kernel frees a dead
  process's holds at once; on every other backend a holder whose session
  is not renewed for its TTL loses its holds (moot renews it from its own
  thread, so a live process never needs to call ``heartbeat()``);
* consistency: ``LINEARIZABLE`` where every operation is atomic on one
  authority (``memory://``: one store under one mutex; ``file://``: each
  directory's flock; etcd: Raft with linearizable reads), ``SEQUENTIAL`` on
  ZooKeeper (reads may be served by a lagging follower), ``CAUSAL`` on Redis
  (replication is asynchronous: a failover can lose acknowledged writes).
  PostgreSQL, MySQL and memcached claim no consistency level here.
"""

from __future__ import annotations

from tooz.coordination import Characteristics as C

from moot.integrations.tooz.driver import MootDriver

_HOSTS = (C.DISTRIBUTED_ACROSS_THREADS, C.DISTRIBUTED_ACROSS_PROCESSES, C.DISTRIBUTED_ACROSS_HOSTS)


class MemoryDriver(MootDriver):
    """``moot+memory://[name]``: threads of one process."""

    CHARACTERISTICS = (C.DISTRIBUTED_ACROSS_THREADS, C.LINEARIZABLE)


class FileDriver(MootDriver):
    """``moot+file:///dir``: processes of one host, through a directory."""

    CHARACTERISTICS = (C.DISTRIBUTED_ACROSS_THREADS, C.DISTRIBUTED_ACROSS_PROCESSES, C.NON_TIMEOUT_BASED,
                       C.LINEARIZABLE)


class RedisDriver(MootDriver):
    """``moot+redis://host:port`` (``moot+rediss://`` with TLS)."""

    CHARACTERISTICS = (*_HOSTS, C.CAUSAL)


class ZooKeeperDriver(MootDriver):
    """``moot+zookeeper://host:port[,host:port...][/chroot]``."""

    CHARACTERISTICS = (*_HOSTS, C.SEQUENTIAL)


class EtcdDriver(MootDriver):
    """``moot+etcd://host:port[,host:port...]``."""

    CHARACTERISTICS = (*_HOSTS, C.LINEARIZABLE)


class PostgreSQLDriver(MootDriver):
    """``moot+postgresql://user:password@host:port/db`` (alias ``moot+postgres://``)."""

    CHARACTERISTICS = _HOSTS


class MySQLDriver(MootDriver):
    """``moot+mysql://user:password@host:port/db``."""

    CHARACTERISTICS = _HOSTS


class MemcachedDriver(MootDriver):
    """``moot+memcached://host:port``."""

    CHARACTERISTICS = _HOSTS
