"""One worker process of the fault suite.

    python -m tests.faults.worker URL NAMESPACE LOCK GROUP REGISTER LOG TTL SEED

Joins GROUP, then loops until SIGTERM: acquire LOCK, hold it for a short
random time writing to the fenced register at REGISTER every few
milliseconds (each write only after reading ``lock.is_held`` True, and
carrying the instant of that read), release. Every event is appended to LOG
as one JSON line with a ``time.monotonic()`` instant ``t`` (the machine's
CLOCK_MONOTONIC, comparable across processes): ``start``, ``joined``,
``acq`` (token; ``t`` is when ``acquire()`` returned), ``lost`` (the
``on_lost`` callback ran), ``seen_lost`` (the loop read ``is_held`` False
while holding), ``rel`` (about to call ``release()``: it stops acting as
holder here), ``err``, ``busy_on``/``busy_off``, ``exit``.

SIGHUP makes the current hold (or the next one) *cling*: it logs ``cling``
and goes on holding, writing every few milliseconds, until ``is_held``
reads False or 3 TTLs passed, so a fault the test injects next lands on a
holder in the middle of its work. SIGUSR1 starts a CPU-bound thread in this
process (pure Python, so it competes with the heartbeat for the GIL and a
core); SIGUSR2 stops it and ends clinging.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from typing import Any

import moot
from tests.faults.register import RegisterClient

WRITE_INTERVAL = 0.01
HOLD = (0.05, 0.3)


class Log:
    def __init__(self, path: str):
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._mutex = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        fields.setdefault("t", time.monotonic())
        line = json.dumps({"ev": event, "pid": os.getpid(), **fields}) + "\n"
        with self._mutex:
            os.write(self._fd, line.encode())  # one write(2) per line: a SIGKILL loses no half line


def main(argv: list[str]) -> None:
    url, namespace, lock_name, group_name, register_path, log_path, ttl, seed = argv
    log = Log(log_path)
    rng = random.Random(f"{seed}-{os.getpid()}")
    stop = threading.Event()
    busy = threading.Event()
    cling = threading.Event()

    def spin() -> None:
        x = 0
        while busy.is_set():
            x += 1

    def on_usr1(*_: object) -> None:
        if not busy.is_set():
            busy.set()
            threading.Thread(target=spin, daemon=True).start()
            log("busy_on")

    def on_usr2(*_: object) -> None:
        busy.clear()
        cling.clear()
        log("busy_off")

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGUSR2, on_usr2)
    signal.signal(signal.SIGHUP, lambda *_: cling.set())
    log("start")
    register = RegisterClient(register_path)
    coord = None
    while coord is None and not stop.is_set():
        try:
            coord = moot.connect(url, member_id=f"w-{os.getpid()}", namespace=namespace, ttl=float(ttl))
        except moot.MootError as exc:
            log("err", what="connect", error=f"{type(exc).__name__}: {exc}")
            stop.wait(0.2)
    if coord is None:
        return
    group = coord.group(group_name)
    while not stop.is_set():
        try:
            group.join()
            log("joined")
            break
        except moot.MootError as exc:
            log("err", what="join", error=f"{type(exc).__name__}: {exc}")
            stop.wait(0.2)
    try:
        while not stop.is_set():
            hold_once(coord, lock_name, register, log, rng, stop, cling, float(ttl))
    finally:
        busy.clear()
        try:
            coord.close()
        finally:
            log("exit")


def hold_once(coord: moot.Coordinator, lock_name: str, register: RegisterClient, log: Log,
              rng: random.Random, stop: threading.Event, cling: threading.Event, ttl: float) -> None:
    state: dict[str, int | None] = {"token": None}
    lock = coord.lock(lock_name, on_lost=lambda _lock: log("lost", token=state["token"]))
    called = time.monotonic()
    try:
        acquired = lock.acquire(timeout=4 * ttl)
    except moot.MootError as exc:
        log("err", what="acquire", error=f"{type(exc).__name__}: {exc}", t_call=called)
        stop.wait(0.05)
        return
    if not acquired:
        log("err", what="acquire", error="timed out", t_call=called)
        return
    token = lock.token
    state["token"] = token
    log("acq", token=token, t_call=called)
    until = time.monotonic() + rng.uniform(*HOLD)
    clinging = False
    while not stop.is_set():
        if cling.is_set() and not clinging:
            clinging = True
            log("cling", token=token)
            until = time.monotonic() + 3 * ttl
        elif clinging and not cling.is_set():
            break
        checked = time.monotonic()
        if not lock.is_held:
            log("seen_lost", token=token, t=checked)
            break
        register.write(token if token is not None else -1, checked)
        if time.monotonic() >= until:
            break
        time.sleep(WRITE_INTERVAL)
    if clinging:
        cling.clear()
    log("rel", token=token, held=lock.is_held)
    try:
        lock.release()
    except moot.MootError as exc:
        log("err", what="release", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main(sys.argv[1:])
