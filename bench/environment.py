"""The machine and the versions a run was measured with."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

from bench.engines import server_version

CLIENT_PACKAGES = ("moot", "tooz", "redis", "kazoo", "etcd3gw", "requests", "psycopg", "psycopg2-binary", "PyMySQL",
                   "pymemcache")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def describe(urls: dict[str, str]) -> dict[str, Any]:
    """Machine (nproc, CPU, kernel, load) and versions (python, servers, client libraries)."""
    packages: dict[str, str | None] = {}
    for name in CLIENT_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
                    "load_at_start": load()},
        "python": sys.version.split()[0],
        "servers": {kind: server_version(kind, url) for kind, url in urls.items()
                    if kind not in ("memory", "file")},
        "packages": packages,
    }
