"""The systems measured, moot, tooz, and tooz's API over moot, behind one small interface.

Every workload is written once against :class:`Client`; the same servers and
the same names serve both systems. tooz is imported only when it is measured
(it is a bench requirement, never a dependency of moot).
"""

from __future__ import annotations

import abc
import contextlib
import urllib.parse
import warnings
from typing import Any

import moot

# tooz imports futurist, which imports eventlet, which warns on import (in
# every process that measures tooz): noise between the bench's progress lines.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

SYSTEMS = ("moot", "tooz", "tooz-on-moot")
#: tooz's API over moot (``moot+<scheme>://`` URLs, moot's tooz driver): measured on the contended
#: workload only, to show what a tooz caller gets by changing its URL.
TOOZ_ON_MOOT_WORKLOADS = ("contended",)


class LockHandle(abc.ABC):
    @abc.abstractmethod
    def acquire(self, timeout: float) -> bool:
        """Block at most ``timeout`` seconds; True once held."""

    @abc.abstractmethod
    def release(self) -> None: ...


class Client(abc.ABC):
    """One coordinator (one member id) of one system on one backend."""

    @abc.abstractmethod
    def lock(self, name: str) -> LockHandle: ...

    @abc.abstractmethod
    def heartbeat(self) -> None:
        """One keep-alive of everything this client holds, as its heartbeat thread does it."""

    @abc.abstractmethod
    def join(self, group: str) -> None: ...

    @abc.abstractmethod
    def members(self, group: str) -> set[str]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class _MootLock(LockHandle):
    def __init__(self, lock: moot.Lock):
        self._lock = lock

    def acquire(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=timeout)

    def release(self) -> None:
        self._lock.release()


class MootClient(Client):
    def __init__(self, url: str, member_id: str, namespace: str, ttl: int | None = None):
        options = {} if ttl is None else {"ttl": ttl}
        self.coord = moot.connect(url, member_id=member_id, namespace=namespace, **options)

    def lock(self, name: str) -> LockHandle:
        return _MootLock(self.coord.lock(name))

    def heartbeat(self) -> None:
        self.coord.backend.refresh_session()

    def join(self, group: str) -> None:
        self.coord.group(group).join()

    def members(self, group: str) -> set[str]:
        return self.coord.group(group).member_ids()

    def close(self) -> None:
        self.coord.close()


class _ToozLock(LockHandle):
    def __init__(self, lock: Any):
        self._lock = lock

    def acquire(self, timeout: float) -> bool:
        # tooz takes a number of seconds as ``blocking`` on every driver
        # (etcd3gw reads its ``timeout`` as the lock's lease TTL).
        return bool(self._lock.acquire(blocking=max(timeout, 0.001)))

    def release(self) -> None:
        self._lock.release()


class ToozClient(Client):
    def __init__(self, url: str, member_id: str, namespace: str, heart: bool = True):
        from tooz import coordination

        self._ns = namespace
        self.coord = coordination.get_coordinator(url, member_id.encode())
        self.coord.start(start_heart=heart)

    def _name(self, name: str) -> bytes:
        return f"{self._ns}-{name}".encode()

    def lock(self, name: str) -> LockHandle:
        return _ToozLock(self.coord.get_lock(self._name(name)))

    def heartbeat(self) -> None:
        self.coord.heartbeat()

    def join(self, group: str) -> None:
        from tooz import coordination

        with contextlib.suppress(coordination.GroupAlreadyExist):
            self.coord.create_group(self._name(group)).get()
        self.coord.join_group(self._name(group)).get()

    def members(self, group: str) -> set[str]:
        return {m.decode() for m in self.coord.get_members(self._name(group)).get()}

    def close(self) -> None:
        self.coord.stop()


def tooz_url(moot_url: str, ttl: int | None = None) -> str | None:
    """The tooz driver URL for the same server as ``moot_url``; None if tooz has none.

    ``ttl``: the seconds after which tooz's driver lets a dead client's locks
    and memberships go (its lock and membership timeouts, or the session
    timeout on ZooKeeper, the liveness timeout on file://), as moot's session
    TTL does; by default tooz's own (30 s on redis, etcd and memcached, 10 s
    on ZooKeeper and file://). tooz's PostgreSQL and MySQL locks die with
    their connection: nothing to set."""
    parts = urllib.parse.urlsplit(moot_url)
    options = {"file": "timeout", "zookeeper": "timeout", "redis": "lock_timeout membership_timeout",
               "etcd": "lock_timeout membership_timeout", "memcached": "lock_timeout membership_timeout"}
    query = "" if ttl is None or parts.scheme not in options else \
        "?" + "&".join(f"{name}={ttl:d}" for name in options[parts.scheme].split())
    if parts.scheme == "file":  # a sibling directory: the two layouts never mix
        return f"file://{parts.path.rstrip('/')}-tooz{query}"
    if parts.scheme == "redis":
        return f"redis://{parts.netloc}{query}"
    if parts.scheme == "zookeeper":
        return f"zookeeper://{parts.netloc}{query}"
    if parts.scheme == "etcd":
        return f"etcd3+http://{parts.netloc}{query}"
    if parts.scheme in ("postgresql", "mysql"):  # the same server, user and database
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
    if parts.scheme == "memcached":
        return f"memcached://{parts.netloc}{query}"
    return None


def open_client(system: str, url: str, member_id: str, namespace: str, heart: bool = True,
                ttl: int | None = None) -> Client:
    """A connected client. ``url`` is moot's URL; tooz gets the matching one.
    ``heart=False`` starts tooz without its heartbeat thread (moot always has one).
    ``ttl``: moot's session TTL, and tooz's timeouts set to the same (see
    :func:`tooz_url`); by default each system's own."""
    if system == "moot":
        return MootClient(url, member_id, namespace, ttl)
    if system == "tooz-on-moot":
        return ToozClient(f"moot+{url}", member_id, namespace, heart)
    translated = tooz_url(url, ttl)
    if translated is None:
        raise ValueError(f"tooz has no driver for {url}")
    return ToozClient(translated, member_id, namespace, heart)
