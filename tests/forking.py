"""Running a check in a forked child (tests of what a child inherits)."""

from __future__ import annotations

import os
from collections.abc import Callable


def in_forked_child(action: Callable[[], object]) -> str:
    """Run ``action()`` in a forked child that then leaves by ``os._exit``
    (never running the parent's exit handlers); return "ok" or the exception
    it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        report = "ok"
        try:
            action()
        except BaseException as exc:
            report = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write, report.encode()[:4000])
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(pid, 0)
    return report
