"""What the engines themselves can do, measured with the client libraries
the backends use, and how many requests a server handled.

* :func:`raw`: the engine's round trip (a read) and the rate of the two writes
  any lock needs (create a key, delete it) done with the bare client: that
  pair rate is the *ceiling* a lock acquire+release can approach.
* :class:`RequestCounter`: requests a server handled, read from the server
  (redis: MONITOR lines outside scripts; ZooKeeper: ``mntr`` packets
  received; etcd: gRPC calls started, which the JSON gateway makes one per
  HTTP call). Other clients' background traffic (heartbeats, pings) counts
  too: callers repeat a measurement and keep the smallest count.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import statistics
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via $http_proxy


def _address(url: str, default_port: int) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    host = (parts.netloc.rsplit("@", 1)[-1].split(",")[0]) or "127.0.0.1"
    name, _, port = host.rpartition(":")
    return (name, int(port)) if name else (host, default_port)


def _loop(op: Callable[[], object], max_ops: int, max_seconds: float) -> dict[str, float]:
    """Run ``op`` until ``max_ops`` or ``max_seconds``; rate and median latency."""
    for _ in range(min(50, max_ops)):
        op()  # warm up connections and caches
    samples: list[float] = []
    started = time.perf_counter()
    deadline = started + max_seconds
    while len(samples) < max_ops and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        op()
        samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {"ops": len(samples), "per_second": len(samples) / elapsed,
            "p50_us": statistics.median(samples) * 1e6}


def raw(kind: str, url: str, max_ops: int, max_seconds: float) -> dict[str, Any]:
    """Round trip and write-pair ceiling of the engine behind ``url``, per client library."""
    if kind == "redis":
        return {"redis-py": _raw_redis(url, max_ops, max_seconds)}
    if kind == "zookeeper":
        return {"kazoo": _raw_zookeeper(url, max_ops, max_seconds)}
    if kind == "etcd":
        return {"http.client": _raw_etcd_http(url, max_ops, max_seconds),
                "etcd3gw": _raw_etcd3gw(url, max_ops, max_seconds)}
    if kind == "postgresql":
        return {"psycopg": _raw_sql(_postgresql(url), "%s", max_ops, max_seconds)}
    if kind == "mysql":
        return {"PyMySQL": _raw_sql(_mysql(url), "%s", max_ops, max_seconds)}
    if kind == "memcached":
        return {"pymemcache": _raw_memcached(url, max_ops, max_seconds)}
    return {}


def _summary(read: dict[str, float], pair: dict[str, float]) -> dict[str, Any]:
    return {"read": read, "write_pair": pair, "ceiling_per_second": pair["per_second"],
            "read_ceiling_per_second": read["per_second"] / 2}


def _raw_redis(url: str, max_ops: int, max_seconds: float) -> dict[str, Any]:
    import redis

    host, port = _address(url, 6379)
    client = redis.Redis(host=host, port=port)
    key = f"bench:raw:{uuid.uuid4().hex}"
    try:
        read = _loop(lambda: client.get(key), max_ops, max_seconds)

        def pair() -> None:
            client.set(key, b"1", nx=True, px=10000)
            client.delete(key)

        return _summary(read, _loop(pair, max_ops, max_seconds))
    finally:
        client.close()


def _raw_zookeeper(url: str, max_ops: int, max_seconds: float) -> dict[str, Any]:
    from kazoo.client import KazooClient

    host, port = _address(url, 2181)
    zk = KazooClient(hosts=f"{host}:{port}")
    zk.start(timeout=10)
    parent = f"/bench-raw-{uuid.uuid4().hex}"
    try:
        zk.ensure_path(parent)
        read = _loop(lambda: zk.exists(parent), max_ops, max_seconds)

        def pair() -> None:
            zk.delete(zk.create(parent + "/q-", b"x", ephemeral=True, sequence=True))

        result = _summary(read, _loop(pair, max_ops, max_seconds))
        zk.delete(parent, recursive=True)
        return result
    finally:
        zk.stop()
        zk.close()


def _raw_etcd_http(url: str, max_ops: int, max_seconds: float) -> dict[str, Any]:
    """The path moot's etcd backend uses: keep-alive http.client to the v3 JSON gateway."""
    import base64

    host, port = _address(url, 2379)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    key = base64.b64encode(f"bench/raw/{uuid.uuid4().hex}".encode()).decode()

    def call(path: str, body: dict[str, Any]) -> None:
        conn.request("POST", "/v3/" + path, json.dumps(body), {"Content-Type": "application/json"})
        conn.getresponse().read()

    try:
        read = _loop(lambda: call("kv/range", {"key": key}), max_ops, max_seconds)

        def pair() -> None:
            call("kv/put", {"key": key, "value": "eA=="})
            call("kv/deleterange", {"key": key})

        return _summary(read, _loop(pair, max_ops, max_seconds))
    finally:
        conn.close()


def _raw_etcd3gw(url: str, max_ops: int, max_seconds: float) -> dict[str, Any]:
    """The client tooz's etcd3+http driver uses (requests underneath)."""
    from etcd3gw.client import Etcd3Client

    host, port = _address(url, 2379)
    client = Etcd3Client(host=host, port=port)
    key = f"bench/raw/{uuid.uuid4().hex}"
    read = _loop(lambda: client.get(key), max_ops, max_seconds)

    def pair() -> None:
        client.put(key, "x")
        client.delete(key)

    return _summary(read, _loop(pair, max_ops, max_seconds))


def _postgresql(url: str) -> Any:
    import psycopg

    parts = urllib.parse.urlsplit(url)
    return psycopg.connect(host=parts.hostname, port=parts.port, user=parts.username, password=parts.password,
                           dbname=parts.path.strip("/"), autocommit=True)


def _mysql(url: str, **options: Any) -> Any:
    import pymysql

    parts = urllib.parse.urlsplit(url)
    return pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username,
                           password=parts.password or "", database=parts.path.strip("/"), autocommit=True,
                           **options)


def _raw_sql(conn: Any, mark: str, max_ops: int, max_seconds: float) -> dict[str, Any]:
    """A read, and an INSERT then DELETE of one row, each its own (durable) transaction."""
    table = f"bench_raw_{uuid.uuid4().hex[:12]}"
    cursor = conn.cursor()
    cursor.execute(f"CREATE TABLE {table} (k VARCHAR(64) PRIMARY KEY, v VARCHAR(64))")
    try:
        read = _loop(lambda: cursor.execute(f"SELECT v FROM {table} WHERE k = {mark}", ("x",)), max_ops,
                     max_seconds)

        def pair() -> None:
            cursor.execute(f"INSERT INTO {table} (k, v) VALUES ({mark}, {mark})", ("x", "1"))
            cursor.execute(f"DELETE FROM {table} WHERE k = {mark}", ("x",))

        return _summary(read, _loop(pair, max_ops, max_seconds))
    finally:
        cursor.execute(f"DROP TABLE {table}")
        conn.close()


def _raw_memcached(url: str, max_ops: int, max_seconds: float) -> dict[str, Any]:
    from pymemcache.client.base import Client as Memcache

    client = Memcache(_address(url, 11211))
    key = f"bench-raw-{uuid.uuid4().hex}"
    try:
        read = _loop(lambda: client.get(key), max_ops, max_seconds)

        def pair() -> None:
            client.add(key, b"1", expire=10, noreply=False)
            client.delete(key, noreply=False)

        return _summary(read, _loop(pair, max_ops, max_seconds))
    finally:
        client.close()


# -- requests handled by a server -------------------------------------------------
#: The engines whose own counters the bench reads, and what they count.
COUNTED = {
    "redis": "commands (MONITOR; a script's inner calls not counted)",
    "zookeeper": "requests (mntr zk_packets_received)",
    "etcd": "gRPC calls (metrics grpc_server_started_total)",
    "postgresql": "statements clients sent (pg_stat_statements, top level: a function's inner ones not counted)",
    "mysql": "statements (Questions)",
    "memcached": "commands (stats: gets, sets, touches, deletes, incr/decr)",
}


class RequestCounter:
    """Counts the requests the server behind ``url`` handles between
    :meth:`start` and :meth:`stop` (see :data:`COUNTED`); ``None`` for
    engines without a server. A probe's own requests are counted too:
    callers subtract an idle window of the same shape."""

    def __init__(self, kind: str, url: str):
        self.kind = kind
        self._monitor: socket.socket | None = None
        self._monitored = b""
        self._before = 0
        if kind == "redis":
            self._address = _address(url, 6379)
        elif kind == "zookeeper":
            self._address = _address(url, 2181)
        elif kind == "etcd":
            self._address = _address(url, 2379)
        elif kind == "memcached":
            self._address = _address(url, 11211)
        self._url = url

    @property
    def available(self) -> bool:
        return self.kind in COUNTED

    def start(self) -> None:
        if self.kind == "redis":
            sock = socket.create_connection(self._address, timeout=5)
            sock.sendall(b"MONITOR\r\n")
            reply = b""
            while b"\r\n" not in reply:
                reply += sock.recv(4096)
            self._monitor = sock
            self._monitored = reply.split(b"\r\n", 1)[1]  # commands already reported after the +OK
        elif self.kind == "zookeeper":
            self._before = self._zookeeper_packets()
        elif self.kind == "etcd":
            self._before = self._etcd_calls()
        elif self.kind == "mysql":
            self._before = self._mysql_questions()
        elif self.kind == "memcached":
            self._before = self._memcached_commands()
        elif self.kind == "postgresql":
            self._before = self._postgresql_statements()

    def stop(self) -> int | None:
        if self.kind == "redis":
            return self._redis_commands()
        if self.kind == "zookeeper":
            return self._zookeeper_packets() - self._before
        if self.kind == "etcd":
            return self._etcd_calls() - self._before
        if self.kind == "mysql":
            return self._mysql_questions() - self._before
        if self.kind == "memcached":
            return self._memcached_commands() - self._before
        if self.kind == "postgresql":
            return self._postgresql_statements() - self._before
        return None

    def _postgresql_statements(self) -> int:
        """Statements run by every client (pg_stat_statements, which the
        benchmark's PostgreSQL preloads; created here on first use)."""
        conn = _postgresql(self._url)
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            (calls,) = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements").fetchone()
            return int(calls)
        finally:
            conn.close()

    def _mysql_questions(self) -> int:
        """Statements clients sent (this probe's own included: callers subtract an idle window)."""
        conn = _mysql(self._url)
        try:
            cursor = conn.cursor()
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
            return int(cursor.fetchone()[1])
        finally:
            conn.close()

    def _memcached_commands(self) -> int:
        """Reads, writes, touches, deletes and arithmetic the server handled (``stats``)."""
        with socket.create_connection(self._address, timeout=5) as sock:
            sock.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        stats = dict(re.findall(rb"STAT (\S+) (\d+)", reply))
        names = (b"cmd_get", b"cmd_set", b"cmd_touch", b"delete_hits", b"delete_misses", b"incr_hits",
                 b"incr_misses", b"decr_hits", b"decr_misses")
        return sum(int(stats.get(name, 0)) for name in names)

    def _redis_commands(self) -> int:
        """Commands clients sent (script-internal calls excluded), read from
        MONITOR up to a marker command sent now on a connection of its own:
        MONITOR reports commands in the order the server ran them, so every
        command that ran before this call is counted, and nothing after."""
        sock = self._monitor
        assert sock is not None
        marker = f"bench-counted-{uuid.uuid4().hex}".encode()
        data = self._monitored
        try:
            with socket.create_connection(self._address, timeout=5) as other:
                other.sendall(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (len(marker), marker))
                reply = b""
                while marker not in reply:
                    chunk = other.recv(4096)
                    if not chunk:
                        raise ConnectionError("redis closed the connection before echoing the marker")
                    reply += chunk
            sock.settimeout(5)
            while marker not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis closed the MONITOR connection")
                data += chunk
        finally:
            sock.close()
            self._monitor = None
        lines = data[:data.index(marker)].decode(errors="replace").splitlines()[:-1]  # the marker's own line
        return sum(1 for line in lines if line.startswith("+") and " lua]" not in line and line != "+OK")

    def _zookeeper_packets(self) -> int:
        with socket.create_connection(self._address, timeout=5) as sock:
            sock.sendall(b"mntr")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        match = re.search(rb"zk_packets_received\s+(\d+)", reply)
        return int(match.group(1)) if match else 0

    def _etcd_calls(self) -> int:
        host, port = self._address
        with _HTTP.open(f"http://{host}:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith("grpc_server_started_total{"))


# -- versions --------------------------------------------------------------------
def server_version(kind: str, url: str) -> str:
    """The server's own account of its version ('' if it cannot tell)."""
    try:
        if kind == "redis":
            with socket.create_connection(_address(url, 6379), timeout=5) as sock:
                sock.sendall(b"INFO server\r\n")
                reply = b""
                while b"redis_version:" not in reply or not reply.endswith(b"\r\n\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            match = re.search(rb"redis_version:(\S+)", reply)
            return f"redis {match.group(1).decode()}" if match else ""
        if kind == "zookeeper":
            with socket.create_connection(_address(url, 2181), timeout=5) as sock:
                sock.sendall(b"srvr")
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            first = reply.decode(errors="replace").splitlines()[0]
            return "ZooKeeper " + first.split(":", 1)[1].strip().split("-")[0].split(",")[0]
        if kind == "etcd":
            host, port = _address(url, 2379)
            with _HTTP.open(f"http://{host}:{port}/version", timeout=5) as response:
                return f"etcd {json.loads(response.read())['etcdserver']}"
        if kind in ("postgresql", "mysql"):
            conn = _postgresql(url) if kind == "postgresql" else _mysql(url)
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT version()")
                version = str(cursor.fetchone()[0])
            finally:
                conn.close()
            return version.split(" on ")[0] if kind == "postgresql" else f"MariaDB {version.split('-')[0]}"
        if kind == "memcached":
            with socket.create_connection(_address(url, 11211), timeout=5) as sock:
                sock.sendall(b"version\r\n")
                return "memcached " + sock.recv(256).decode().split()[1]
    except Exception:  # a version is decoration: never fail a run for it
        return ""
    return ""
