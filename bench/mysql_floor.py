"""What an uncontended acquire+release can cost on MariaDB, at the least,
for tooz's model and for moot's, on the benchmark's production settings
(InnoDB flushing its log at every commit).

``python -m bench.mysql_floor`` starts its own server (``tests/servers.py``)
and prints, per cycle, with PyMySQL on one connection:

* ``GET_LOCK`` then ``RELEASE_LOCK``: the SQL of tooz's cycle; nothing is
  written, and the lock dies with the connection;
* two single-row autocommitted writes (an INSERT, then a DELETE): the
  engine limits' *write pair*;
* two transactions that each advance a directory's counter row and write
  one entry row, each sent in one round trip: the least that moot's model writes (the counter orders a
  directory's writes and gives versions and tokens on Galera too, where
  ``GET_LOCK`` is node-local), with none of moot's checks;
* moot's own ``enqueue`` + ``delete`` through the backend;
* a whole acquire+release of a lock, moot's and tooz's (tooz's driver opens
  a connection for every acquire: its release closes it).

Each row also gives the CPU time per cycle of this process (the client) and
of the server (from ``/proc``, in ticks: hence rounds of some seconds).
The gap between the third row and the first is what a lock that outlives
its connection, carries a fencing token and holds on Galera costs over one
that writes nothing.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pymysql.constants import CLIENT

import moot
from bench.engines import _mysql
from bench.systems import open_client
from tests import servers

SECONDS = 3.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_cycle(cycle: Callable[[], object], server_pid: int) -> str:
    """Wall time, this process's CPU and the server's CPU per ``cycle``, over
    ``SECONDS`` after a short warm-up."""
    for _ in range(50):
        cycle()
    count, started, client, server = 0, time.perf_counter(), time.process_time(), _cpu_seconds(server_pid)
    while time.perf_counter() - started < SECONDS:
        cycle()
        count += 1
    wall = (time.perf_counter() - started) / count * 1000
    client = (time.process_time() - client) / count * 1e6
    server = (_cpu_seconds(server_pid) - server) / count * 1e6
    return f"{wall:.3f} ms per cycle (CPU: client {client:.0f} us, server {server:.0f} us)"


def main() -> None:
    cluster = servers.start_cluster(servers.PRODUCTION["mysql"], size=1)
    url, server_pid = cluster.url, cluster.members[0].pid
    conn = _mysql(url, client_flag=CLIENT.MULTI_STATEMENTS)
    cursor = conn.cursor()
    table = f"bench_floor_{uuid.uuid4().hex[:12]}"
    cursor.execute(f"CREATE TABLE {table}_n (dir VARBINARY(64) PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB")
    cursor.execute(f"CREATE TABLE {table}_e (k VARBINARY(64) PRIMARY KEY, v BLOB) ENGINE=InnoDB")
    advance = f"INSERT INTO {table}_n (dir, n) VALUES ('d/', 1) ON DUPLICATE KEY UPDATE n = n + 1"

    def transaction(write: str) -> None:  # one round trip, as moot sends it
        cursor.execute(f"START TRANSACTION; {advance}; {write}; COMMIT")
        while cursor.nextset():
            pass

    rows = {
        "GET_LOCK + RELEASE_LOCK (tooz's SQL)": lambda: (cursor.execute("SELECT GET_LOCK('floor', 0)"),
                                                         cursor.execute("SELECT RELEASE_LOCK('floor')")),
        "INSERT + DELETE, autocommitted": lambda: (cursor.execute(f"INSERT INTO {table}_e VALUES ('d/1', 'v')"),
                                                   cursor.execute(f"DELETE FROM {table}_e WHERE k = 'd/1'")),
        "2 transactions: counter + entry each": lambda: (
            transaction(f"INSERT INTO {table}_e VALUES ('d/1', 'v')"),
            transaction(f"DELETE FROM {table}_e WHERE k = 'd/1'")),
    }
    try:
        for name, cycle in rows.items():
            print(f"{name}: {_per_cycle(cycle, server_pid)}", flush=True)
        with moot.connect(url, member_id="floor") as coordinator:
            backend = coordinator.backend
            print("moot enqueue + delete: "
                  f"{_per_cycle(lambda: backend.delete(backend.enqueue('floor/', b'v')[0].key), server_pid)}",
                  flush=True)
            lock = coordinator.lock("floor")
            print(f"moot Lock acquire + release: {_per_cycle(lambda: (lock.acquire(), lock.release()), server_pid)}",
                  flush=True)
        tooz = open_client("tooz", url, "floor", "floor")
        try:
            held = tooz.lock("floor")
            print(f"tooz lock acquire + release: {_per_cycle(lambda: (held.acquire(5), held.release()), server_pid)}")
        finally:
            tooz.close()
    finally:
        cursor.execute(f"DROP TABLE {table}_n, {table}_e")
        conn.close()  # the server stops when the process ends (tests/servers.py)


if __name__ == "__main__":
    main()
