"""moot as a tooz driver: tooz's API (``tooz.coordination.get_coordinator``)
on moot's locks, groups and elections, chosen by a ``moot+<scheme>://`` URL.

    from tooz import coordination
    coord = coordination.get_coordinator("moot+redis://127.0.0.1:6379?ttl=10", b"worker-1")
    coord.start()
    with coord.get_lock(b"volume-42"):
        ...

The URL is moot's own after ``moot+`` (``ttl``, ``timeout``, ``namespace``,
TLS and authentication options as in docs/backends.md; an unknown option is
an error at ``start()`` naming the known ones). Needs ``pip install
'moot[tooz]'``. Modules: :mod:`.driver` (the coordination driver),
:mod:`.lock` (tooz's Lock), :mod:`.errors` (moot's errors as tooz's),
:mod:`.kinds` (one class per backend, with its characteristics). The
migration guide is docs/migrating.md.
"""

from moot.integrations.tooz.driver import MootDriver
from moot.integrations.tooz.kinds import (
    EtcdDriver,
    FileDriver,
    MemcachedDriver,
    MemoryDriver,
    MySQLDriver,
    PostgreSQLDriver,
    RedisDriver,
    ZooKeeperDriver,
)
from moot.integrations.tooz.lock import MootLock

__all__ = ["EtcdDriver", "FileDriver", "MemcachedDriver", "MemoryDriver", "MootDriver", "MootLock", "MySQLDriver",
           "PostgreSQLDriver", "RedisDriver", "ZooKeeperDriver"]
