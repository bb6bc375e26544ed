"""Real OS threads, also in a process that eventlet has monkey-patched.

``threading`` here is the standard module, or, once ``eventlet.monkey_patch()``
has replaced it with green threads, eventlet's saved copy of the original.
moot's heartbeat, watchdog and callback threads are made from it: a green
thread would stop renewing the session whenever the application's green
threads keep the hub busy (a CPU-bound loop of a few seconds loses every
lock), which is exactly what a heartbeat must survive. Their events and
locks are real too, so setting one from a green thread wakes them at once.

The module is looked up when moot is imported: a process that monkey-patches
after importing moot still gets real threads, and one that patches before
gets eventlet's originals.
"""

from __future__ import annotations

import sys
import threading as _threading
import types
from typing import TYPE_CHECKING


def _original_threading() -> types.ModuleType:
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        original: types.ModuleType = eventlet_patcher.original("threading")
        return original
    return _threading


if TYPE_CHECKING:
    import threading
else:
    threading = _original_threading()

__all__ = ["threading"]
