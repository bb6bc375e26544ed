"""The tests of tooz's own driver suite that cannot apply to moot's tooz
driver, with the reason: the one list tests/test_tooz_driver.py leaves out.
Every other test of tooz/tests/test_coordination.py and test_partitioner.py
must pass on every backend.

Also a pytest plugin for the run of tooz's suites (``-p
tests.tooz_not_applicable`` with ``MOOT_TOOZ_KIND`` set): it deselects
exactly these tests (by class and name, never by prefix) and tooz's
:data:`REPEATS`.
"""

from __future__ import annotations

import os

import pytest

API = "TestAPI::"

#: tooz's subclasses of TestPartitioner that only change the class attribute
#: ``url``, which TOOZ_TEST_URL overrides: the same tests again on the same URL.
REPEATS = frozenset({"IPCTestPartitioner", "FileTestPartitioner"})

#: Not applicable on every backend: test -> reason.
EVERYWHERE = {
    API + "test_get_lock_release_broken":
        "break_() raises tooz.NotImplemented: moot never frees a lock behind its holder's back "
        "(the holder's fencing token would lie); a lock is freed by its holder or with its session",
    API + "test_heartbeat":
        "requires_beating is False: moot's own heartbeat thread keeps the session "
        "(heartbeat() is a no-I/O call; tests/test_tooz_driver.py checks it)",
    API + "test_heartbeat_loop":
        "requires_beating is False: tooz's heart thread is not needed, and not started",
    API + "test_timeout":
        "expects a member that never calls heartbeat() to be expelled after ?timeout=5; a moot member "
        "stays alive while its process runs (moot renews the session from its own thread, as tooz's "
        "zookeeper driver lets kazoo do), and moot's timeout option bounds calls, not liveness",
    API + "test_watch_join_group_disappear":
        "only for tooz's own etcd3gw, memcached and redis driver classes: it calls their private "
        "_destroy_group()",
}

#: Not applicable on some backends only: kind -> {test: reason}.
BY_KIND = {
    "memory": {
        API + "test_connection_error_bad_host":
            "memory:// has no host to connect to (not DISTRIBUTED_ACROSS_HOSTS)",
        API + "test_get_lock_concurrency_locking_two_lock_process":
            "memory:// is one process: a spawned process has a store of its own",
        API + "test_get_lock_serial_locking_two_lock_process":
            "memory:// is one process: a spawned process has a store of its own",
    },
    "redis": {
        API + "test_connection_error_bad_host":
            "its URL redis://localhost:1/f00 has a path that is not a Redis database number: moot "
            "refuses it before connecting (ToozError naming the path); "
            "test_a_refused_connection_is_a_tooz_connection_error checks a refused port instead",
    },
    "memcached": {
        API + "test_connection_error_bad_host":
            "its URL memcached://localhost:1/f00 has a path, which memcached:// does not take: moot "
            "refuses it before connecting (ToozError); "
            "test_a_refused_connection_is_a_tooz_connection_error checks a refused port instead",
    },
    "file": {
        API + "test_connection_error_bad_host":
            "file:// has no host to connect to (one host, not DISTRIBUTED_ACROSS_HOSTS)",
    },
}


def not_applicable(kind: str) -> dict[str, str]:
    """Every test that does not apply on ``kind``: test id -> reason."""
    return {**EVERYWHERE, **BY_KIND.get(kind, {})}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kind = os.environ.get("MOOT_TOOZ_KIND")
    if kind is None:
        return
    left_out = not_applicable(kind)
    keep, drop = [], []
    for item in items:
        cls = getattr(item, "cls", None)
        name = cls.__name__ if cls is not None else ""
        (drop if name in REPEATS or f"{name}::{item.name}" in left_out else keep).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
