"""etcd leases, the engine side of a moot session: grant, keep-alive, revoke
and time-to-live, each one idempotent request (resent when unanswered; see
docs/design/etcd.md)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

from moot.backends.etcd.http import _Json
from moot.errors import BackendError, SessionExpired

#: ``call(path, body, idempotent=...)``: one request to the gateway.
_Call = Callable[..., _Json]


class _Leases:
    """The lease requests of one backend, over its ``call``."""

    def __init__(self, call: _Call, where: str):
        self._call = call
        self._where = where

    def grant(self, ttl: float) -> tuple[int, float]:
        """(lease id, granted TTL in seconds) of a new lease of ``ceil(ttl)``
        seconds (1 at least). Sent again after a lost answer: a lease granted
        then owns no key and expires on its TTL."""
        answer = self._call("lease/grant", {"TTL": max(1, math.ceil(ttl))}, idempotent=True)
        if answer.get("error"):
            raise BackendError(f"etcd at {self._where} refused a lease: {answer['error']}")
        granted = int(answer.get("TTL", 0))
        if granted <= 0:
            raise BackendError(f"etcd at {self._where} granted a lease with no TTL: {answer}")
        return int(answer["ID"]), float(granted)

    def keep_alive(self, lease: int) -> float:
        """The TTL (seconds) this keep-alive renewed ``lease`` for;
        SessionExpired if it has none left."""
        answer = self._call("lease/keepalive", {"ID": lease}, idempotent=True)
        granted = int(answer.get("TTL", 0))
        if granted <= 0:
            raise SessionExpired("the etcd lease of the session expired")
        return float(granted)

    def revoke(self, lease: int) -> bool:
        """Revoke ``lease``; False if it was already gone."""
        try:
            self._call("kv/lease/revoke", {"ID": lease}, idempotent=True)
        except SessionExpired:
            return False
        return True

    def revoke_quietly(self, lease: int) -> None:
        with contextlib.suppress(SessionExpired):
            self._call("kv/lease/revoke", {"ID": lease}, idempotent=True)

    def last_seen(self, lease: int) -> float | None:
        """When (wall clock, to the second) ``lease`` was last granted or kept
        alive; None if it is gone."""
        answer = self._call("kv/lease/timetolive", {"ID": lease}, idempotent=True)
        remaining = int(answer.get("TTL", 0))  # the JSON gateway omits a zero (a lease in its last second)
        if remaining < 0:
            return None
        return time.time() - (int(answer.get("grantedTTL", remaining)) - remaining)
