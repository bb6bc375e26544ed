"""The fork registry: a forked child forgets every backend this process had
connected, whether or not a coordinator's session holds it.

A backend calls :func:`track` once it is connected and :func:`untrack`
when it closes or forgets itself. Guarantees:

* In a forked child, ``forget_after_fork()`` is called once on every
  backend tracked at the fork (and not collected since), from the one
  at-fork hook this module registers, before the child's own code runs on.
* A failing ``forget_after_fork()`` is logged (debug) and the others are
  still forgotten: the fork itself always goes on.
* The registry holds backends weakly: tracking keeps nothing alive.
* The child starts with an empty registry.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moot.backends.base import Backend

log = logging.getLogger("moot.backends")

_TRACKED: weakref.WeakSet[Backend] = weakref.WeakSet()


def track(backend: Backend) -> None:
    """Forget ``backend`` in a forked child (until :func:`untrack`)."""
    _TRACKED.add(backend)


def untrack(backend: Backend) -> None:
    """No longer forget ``backend`` in a forked child (no-op if not tracked)."""
    _TRACKED.discard(backend)


def _forget_in_child() -> None:
    for backend in list(_TRACKED):
        try:
            backend.forget_after_fork()
        except Exception:  # the fork itself must go on
            log.debug("forgetting %r after fork failed", backend, exc_info=True)
    _TRACKED.clear()


os.register_at_fork(after_in_child=_forget_in_child)
