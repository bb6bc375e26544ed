"""The server's work for one uncontended acquire+release on Redis, counted
in instructions, for moot and for tooz.

``python -m bench.redis_instructions`` runs a redis-server of its own under
valgrind's callgrind (``apt-get install valgrind``) and prints the
instructions the server executed per acquire+release: for moot's lock (two
script calls) and for tooz's (``SET NX PX`` and a release script).
Instructions, unlike seconds, do not move with whatever else the machine
is doing, so two versions of the scripts can be compared in one short run
on a busy machine. The server runs without snapshots (nothing the counted
commands do depends on them, and a snapshot's fork would count too).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.systems import open_client
from tests import servers

CYCLES = 500
ROUNDS = 2


def _wait_for(port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"redis-server under valgrind did not listen on {port} within {within:g} s")


def _per_cycle(pid: int, out: Path, cycle: Callable[[], object]) -> float:
    """Instructions the server ran per ``cycle``, over :data:`CYCLES` cycles."""
    for _ in range(20):  # warm up: connections, scripts loaded
        cycle()
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    for _ in range(CYCLES):
        cycle()
    before = set(out.glob("cg.*"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while not (dumps := set(out.glob("cg.*")) - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not dumps:
        raise SystemExit("callgrind wrote no dump within 30 s of callgrind_control --dump")
    for line in max(dumps, key=lambda p: p.stat().st_mtime).read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1]) / CYCLES
    raise SystemExit("callgrind's dump has no summary line")


def main() -> None:
    missing = [tool for tool in ("valgrind", "callgrind_control", "redis-server") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install valgrind redis-server")
    (port,) = servers._free_ports(1)
    with tempfile.TemporaryDirectory(prefix="moot-callgrind-") as tmp:
        out = Path(tmp)
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", "redis-server", "--port", str(port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for(port, 60)
            url = f"redis://127.0.0.1:{port}"
            for system in ("moot", "tooz"):
                client = open_client(system, url, "counted", "instructions")
                try:
                    lock = client.lock("x")
                    for round_ in range(ROUNDS):
                        count = _per_cycle(server.pid, out, lambda held=lock: (held.acquire(5), held.release()))
                        print(f"{system} acquire+release, round {round_ + 1}: {count:,.0f} instructions", flush=True)
                finally:
                    client.close()
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    sys.exit(main())
