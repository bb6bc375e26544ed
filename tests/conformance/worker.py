"""A separate OS process for multi-process conformance tests.

    python -m tests.conformance.worker URL NAMESPACE hold LOCK GROUP
        join GROUP, take LOCK, print "held TOKEN", then wait to be killed
    python -m tests.conformance.worker URL NAMESPACE loop LOCK COUNT LOGFILE
        COUNT times: take LOCK, append "B pid token" and "E pid token" to
        LOGFILE (with the lock held), release
"""

from __future__ import annotations

import os
import sys
import threading

import moot


def main(argv: list[str]) -> None:
    url, namespace, mode, *args = argv
    with moot.connect(url, member_id=f"worker-{os.getpid()}", namespace=namespace, ttl=2) as coord:
        if mode == "hold":
            lock_name, group_name = args
            coord.group(group_name).join()
            lock = coord.lock(lock_name)
            assert lock.acquire(timeout=60)
            print(f"held {lock.token}", flush=True)
            threading.Event().wait()
        elif mode == "loop":
            lock_name, count, logfile = args
            for _ in range(int(count)):
                with coord.lock(lock_name, timeout=60) as held, open(logfile, "a") as log:
                    log.write(f"B {os.getpid()} {held.token}\n")
                    log.flush()
                    log.write(f"E {os.getpid()} {held.token}\n")
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
