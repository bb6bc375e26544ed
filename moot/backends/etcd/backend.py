"""EtcdBackend: the primitives over etcd v3 leases, transactions and watches."""

from __future__ import annotations

import base64
import builtins
import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from typing import NoReturn

from moot import deadline
from moot.backends._support.tls import ETCD_ALIASES, option_names, tls_context
from moot.backends.base import Backend, CallbackWatch, Dispatcher, Entry, Watch
from moot.backends.etcd.http import _RESENT, _b64, _Http, _Json, _prefix_end
from moot.backends.etcd.lease import _Leases
from moot.backends.etcd.watch import _LINGER, _QUEUE_ENTRY, _QueueWatch, _Stream, _WatchHub
from moot.errors import (
    BackendError,
    CoordinatorClosed,
    SessionExpired,
)
from moot.realthreads import threading
from moot.url import BackendURL


class EtcdBackend(Backend):
    """Primitives over etcd v3: leases, transactions and watches."""

    OPTIONS = option_names(ETCD_ALIASES)

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        self._tls = tls_context(options, default=url.scheme == "etcd3+https", aliases=ETCD_ALIASES,
                                where=url.redacted())
        self._leases = _Leases(self._call, url.redacted())
        root = url.path.strip("/")
        self._root = root + "/" if root else ""
        self._lease: int | None = None
        self._closed = True  # until connect() succeeds
        self._forked = False
        self._queues: dict[str, _QueueWatch] = {}  # directory -> its shared stream
        self._queues_lock = threading.Lock()

    def connect(self, timeout: float) -> None:
        http_ = _Http(self.url, self._tls, timeout)
        with deadline.bounded(time.monotonic() + timeout):  # one deadline for every step
            http_.authenticate()
            version = str(http_.call("/version", idempotent=True).get("etcdserver", "0.0"))
        try:
            major_minor = tuple(int(part) for part in version.split(".")[:2])
        except ValueError:
            raise BackendError(f"etcd at {self.url.redacted()} reports no usable version: {version!r}") from None
        if major_minor < (3, 3):
            raise BackendError(f"etcd at {self.url.redacted()} is {version}; moot needs etcd 3.3 or later")
        http_.api = "/v3beta/" if major_minor == (3, 3) else "/v3/"
        self._http = http_
        self._dispatcher = Dispatcher("moot-etcd-callbacks")
        self._hub = _WatchHub(http_)
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(BackendError, OSError):  # else it expires on its TTL
            self.close_session()
        self._closed = True
        self._hub.close()
        self._dispatcher.close()
        self._http.close()

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited sockets (pool, watch
        streams, the watch thread's wake-up pair) with a plain close, revoke
        nothing and take no lock; the backend is closed from then on."""
        if self._closed:
            return
        self._closed = True
        self._forked = True
        self._lease = None
        self._queues = {}
        self._queues_lock = threading.Lock()
        self._http.forget()
        self._hub.forget()

    def ping(self) -> str:
        return f"etcd {self._call('/version', None).get('etcdserver', '?')}"

    def _call(self, path: str, body: _Json | None, *, idempotent: bool = False) -> _Json:
        if self._closed:
            self._refuse()
        return self._http.call(path, body, idempotent=idempotent)

    def _refuse(self) -> NoReturn:
        if self._forked:
            raise CoordinatorClosed(
                "this etcd backend was inherited across fork() and belongs to the parent process; "
                "connect a new coordinator in the child"
            )
        raise CoordinatorClosed("this etcd backend is closed")

    # -- keys as etcd sees them ------------------------------------------
    def _key(self, key: str) -> bytes:
        return (self._root + key).encode()

    def _entry(self, kv: _Json) -> Entry:
        lease = int(kv.get("lease", 0))
        return Entry(
            key=base64.b64decode(kv["key"]).decode()[len(self._root) :],
            value=base64.b64decode(kv.get("value", "")),
            version=int(kv["mod_revision"]),
            seq=int(kv["create_revision"]),
            owner=str(lease) if lease else None,
        )

    def _range(self, prefix: str) -> _Json:
        start = self._key(prefix) or b"\x00"
        return {"key": _b64(start), "range_end": _b64(_prefix_end(self._key(prefix)))}

    def _put(self, key: str, value: bytes, ephemeral: bool) -> _Json:
        put: _Json = {"key": _b64(self._key(key)), "value": _b64(value)}
        if ephemeral:
            if self._lease is None:
                raise SessionExpired("no etcd session is open; ephemeral keys need a live session")
            put["lease"] = self._lease
        return put

    # -- session (a lease) --------------------------------------------------
    def open_session(self, ttl: float) -> str:
        self._lease, self.granted_ttl = self._leases.grant(ttl)
        return str(self._lease)

    def refresh_session(self) -> None:
        lease = self._lease
        if lease is None:
            raise SessionExpired("no etcd session is open")
        granted = self._leases.keep_alive(lease)
        if lease == self._lease:
            self.granted_ttl = granted  # what this keep-alive renewed it for

    def close_session(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            self._leases.revoke_quietly(lease)

    def expire_session(self, session_id: str) -> bool:
        try:
            lease = int(session_id)
        except ValueError:
            return False
        revoked = self._leases.revoke(lease)
        if lease == self._lease:
            self._session_lost()  # gone either way: tell the owner now
        return revoked

    def session_last_seen(self, session_id: str) -> float | None:
        try:
            lease = int(session_id)
        except ValueError:
            return None
        return self._leases.last_seen(lease)

    # -- keys -------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        kvs = self._call("kv/range", {"key": _b64(self._key(key))}, idempotent=True).get("kvs")
        return self._entry(kvs[0]) if kvs else None

    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        put = self._put(key, value, ephemeral)
        absent = {"key": put["key"], "target": "CREATE", "result": "EQUAL", "create_revision": 0}
        answer = self._call("kv/txn", {"compare": [absent], "success": [{"request_put": put}]})
        if not answer.get("succeeded"):
            return None
        revision = int(answer["header"]["revision"])
        return Entry(key, bytes(value), revision, revision, str(put["lease"]) if ephemeral else None)

    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        put = {"key": _b64(self._key(key)), "value": _b64(value), "ignore_lease": True, "prev_kv": True}
        same = {"key": put["key"], "target": "MOD", "result": "EQUAL", "mod_revision": version}
        # An absent key has mod_revision 0: it must exist as well.
        exists = {"key": put["key"], "target": "VERSION", "result": "GREATER", "version": 0}
        answer = self._call("kv/txn", {"compare": [same, exists], "success": [{"request_put": put}]})
        if not answer.get("succeeded"):
            return None
        previous = self._entry(answer["responses"][0]["response_put"]["prev_kv"])
        return Entry(key, bytes(value), int(answer["header"]["revision"]), previous.seq, previous.owner)

    def delete(self, key: str, version: int | None = None) -> bool:
        """Delete ``key`` (at ``version`` if given); True if deleted. Sent again
        after a lost answer (see docs/design/etcd.md): True then means the
        key is gone, perhaps deleted by the lost attempt."""
        target = {"key": _b64(self._key(key))}
        if version is None:
            answer = self._call("kv/deleterange", target, idempotent=True)
            return int(answer.get("deleted", 0)) > 0 or bool(answer.get(_RESENT))
        same = {**target, "target": "MOD", "result": "EQUAL", "mod_revision": version}
        exists = {**target, "target": "VERSION", "result": "GREATER", "version": 0}
        read = {"request_range": {**target, "count_only": True}}
        txn = {"compare": [same, exists], "success": [{"request_delete_range": target}], "failure": [read]}
        answer = self._call("kv/txn", txn, idempotent=True)
        if answer.get("succeeded"):
            return True
        if not answer.get(_RESENT):
            return False
        return not int(answer["responses"][0]["response_range"].get("count", 0))

    def list(self, prefix: str) -> list[Entry]:
        answer = self._call("kv/range", self._range(prefix), idempotent=True)
        return [self._entry(kv) for kv in answer.get("kvs", [])]

    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._sequential(prefix, value, ephemeral, False)[0]

    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """One transaction: put the new key and read the prefix."""
        return self._sequential(prefix, value, True, True)

    def _sequential(
        self, prefix: str, value: bytes, ephemeral: bool, read: bool
    ) -> tuple[Entry, builtins.list[Entry]]:
        key = f"{prefix}{uuid.uuid4().hex}"
        put = self._put(key, value, ephemeral)
        ops: list[_Json] = [{"request_put": put}]
        if read:
            ops.append({"request_range": self._range(prefix)})
        answer = self._call("kv/txn", {"success": ops})
        revision = int(answer["header"]["revision"])
        entry = Entry(key, bytes(value), revision, revision, str(put["lease"]) if ephemeral else None)
        if not read:
            return entry, []
        return entry, [self._entry(kv) for kv in answer["responses"][1]["response_range"].get("kvs", [])]

    def watch(self, key: str, callback: Callable[[], None]) -> Watch:
        if self._closed:
            self._refuse()
        if not key.endswith("/") and _QUEUE_ENTRY.match(key.rpartition("/")[2]):
            return self._watch_entry(key, callback)
        request: _Json = {"key": _b64(self._key(key))}
        if key.endswith("/"):
            request = self._range(key)
        watch = CallbackWatch(callback, lambda _watch: self._hub.drop(stream))
        stream = _Stream(request, lambda _keys: self._dispatcher.submit(watch.fire), lambda: watch.cancelled)
        if stream.open(self._http):
            self._dispatcher.submit(watch.fire)
        self._hub.add(stream)
        return watch

    def _watch_entry(self, key: str, callback: Callable[[], None]) -> Watch:
        """A watch on a queue entry, through its queue's shared stream
        (opened if need be: the only round trip)."""
        directory = key[: key.rfind("/") + 1]
        fresh: _QueueWatch | None = None
        while True:
            with self._queues_lock:  # never held across I/O (also a real lock for green threads)
                queue = self._queues.get(directory)
                if queue is None and fresh is not None:
                    queue = self._queues[directory] = fresh
                    assert fresh.stream is not None
                    self._hub.add(fresh.stream)
                    fresh = None
                if queue is not None:
                    watch = CallbackWatch(callback, functools.partial(self._unwatch_entry, directory, queue))
                    queue.add(self._key(key), watch)
                    break
            fresh = _QueueWatch(self._dispatcher)
            stream = _Stream(self._range(directory), fresh.fire, fresh.is_closed)
            stream.open(self._http)  # events before any watch concern nobody
            fresh.stream = stream
        if fresh is not None:  # another thread opened the queue's stream meanwhile
            assert fresh.stream is not None
            fresh.stream.close()
        return watch

    def _unwatch_entry(self, directory: str, queue: _QueueWatch, watch: CallbackWatch) -> None:
        if queue.remove(watch):
            self._hub.call_at(time.monotonic() + _LINGER, lambda: self._retire(directory, queue))

    def _retire(self, directory: str, queue: _QueueWatch) -> None:
        """Close a queue's stream that stayed unused for ``_LINGER`` seconds (hub thread)."""
        with self._queues_lock:
            if not queue.retire(time.monotonic() - _LINGER):
                return
            if self._queues.get(directory) is queue:
                del self._queues[directory]
        assert queue.stream is not None
        self._hub.drop(queue.stream)

