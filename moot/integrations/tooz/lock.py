"""tooz's ``Lock`` on moot's locks: what ``coordinator.get_lock(name)`` returns.

Guarantees (beyond tooz's, which this class keeps):

* Exclusive holds are ``coord.lock(name)``, shared ones
  ``coord.rwlock(name)`` read holds, in the one FIFO queue moot keeps per
  name: waiters are served in arrival order, every hold has a fencing
  ``token``, and ``moot locks`` shows who holds and who waits.
* One tooz ``Lock`` object may be used from many threads; each acquire is a
  hold of its own. A shared acquire while this object already holds shared
  is granted (a second shared hold); any other acquire while it holds waits
  like any other client would (``blocking=False``: False at once).
* ``release()`` releases one hold of this object (the latest) and returns
  True; it returns False, and never raises, when the object holds nothing
  (never acquired, already released, or lost with the session). It raises
  ``ToozConnectionError`` only if the engine cannot be reached to release a
  hold that is still held (moot's heartbeat then removes it as soon as the
  engine answers, or the session ends: either way it is freed).
* ``heartbeat()`` and ``is_still_owner()`` make no round trip: True while a
  hold is held and its session trusted (see ``moot.Lock.is_held``).
* ``break_()`` raises ``tooz.NotImplemented``: moot never frees a lock behind
  its holder's back (that would void the fencing guarantee); a holder's locks
  are freed when its session ends.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import tooz
from tooz import locking

import moot
from moot.integrations.tooz.errors import translated

if TYPE_CHECKING:
    from moot.integrations.tooz.driver import MootDriver

Hold = moot.Lock | moot.RWLock


def wait_of(blocking: bool | float, timeout: float | None) -> tuple[bool, float | None]:
    """tooz's ``(blocking, timeout)`` as moot's: ``blocking=False`` does not
    wait; ``True`` waits up to ``timeout`` (None: forever); a number waits
    that many seconds (``timeout``, if also given, wins)."""
    if blocking is False:
        return False, None
    if blocking is True:
        return True, timeout
    return True, blocking if timeout is None else timeout


class MootLock(locking.Lock):
    """A tooz lock named ``name`` (bytes or str) on the driver's coordinator."""

    def __init__(self, driver: MootDriver, name: bytes | str):
        super().__init__(name.encode() if isinstance(name, str) else name)
        self._driver = driver
        self._text = driver.text(self.name, "lock name")
        self._holds: list[Hold] = []  # held by this object, oldest first
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"<moot tooz lock {self._text!r} holds={len(self._holds)}>"

    @property
    def token(self) -> int | None:
        """The fencing token of this object's latest hold (None if none):
        greater than the token of every earlier hold of this name."""
        with self._mutex:
            return self._holds[-1].token if self._holds else None

    def acquire(self, blocking: bool | float = True, shared: bool = False,  # type: ignore[override]
                timeout: float | None = None) -> bool:
        wait, seconds = wait_of(blocking, timeout)
        coord = self._driver.coordinator()
        hold: Hold = coord.rwlock(self._text) if shared else coord.lock(self._text)
        with translated():
            if isinstance(hold, moot.RWLock):
                got = hold.acquire_read(blocking=wait, timeout=seconds)
            else:
                got = hold.acquire(blocking=wait, timeout=seconds)
        if got:
            with self._mutex:
                self._holds.append(hold)
        return got

    def release(self) -> bool:
        with self._mutex:
            if not self._holds:
                return False
            hold = self._holds.pop()
        with translated():
            return hold.release()

    def heartbeat(self) -> bool:
        """True while this object holds the lock (no round trip: moot's
        heartbeat thread keeps the session)."""
        return self.is_still_owner()

    def is_still_owner(self) -> bool:
        with self._mutex:
            return any(hold.is_held for hold in self._holds)

    def break_(self) -> bool:
        raise tooz.NotImplemented(
            "moot does not break another holder's lock (its fencing token would lie); "
            "the lock is freed when the holder releases it or its session ends")
