"""EtcdBackend: the primitives over etcd v3 leases, transactions and watches."""

from __future__ import annotations

import base64
import builtins
import contextlib
import functools
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, NoReturn

from moot import deadline
from moot.backends._support.tls import ETCD_ALIASES, option_names, tls_context
from moot.backends.base import Backend, CallbackWatch, Dispatcher, Entry, Watch
from moot.backends.etcd.http import _RESENT, _b64, _Http, _Json, _prefix_end
from moot.backends.etcd.lease import _Leases
from moot.backends.etcd.watch import _LINGER, _QUEUE_ENTRY, _EntryWatch, _QueueWatch, _WatchHub
from moot.errors import (
    BackendError,
    CoordinatorClosed,
    SessionExpired,
)
from moot.realthreads import threading
from moot.url import BackendURL

#: A range read of at least this many keys is kept for the next read of
#: the same range (see :meth:`EtcdBackend._read`); smaller ones (a lock's
#: queue, mostly) are read whole every time, as cheap as a filtered read.
_KEEP_FROM = 32
#: Nor is a read of more keys than this kept: the memory a backend keeps stays bounded.
_KEEP_UPTO = 20_000
#: How many ranges' last reads a backend keeps (least recently read dropped first).
_KEPT_LISTINGS = 16


class _Listing(NamedTuple):
    """A range as etcd had it at ``revision`` of cluster ``cluster``: its
    keys (in order) with their entries (None in a keys-only read)."""

    cluster: str
    revision: int
    entries: dict[bytes, Entry | None]
    calm: bool  # False: a kept key was gone at the last read; read the whole range next time


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
        self._listings: OrderedDict[tuple[str, str], _Listing] = OrderedDict()  # kept range reads: _read()
        self._listings_lock = threading.Lock()

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
        # The gateway's WebSocket (one for every watch) cannot carry an auth token.
        self._hub = _WatchHub(http_, shared=self.url.password is None)
        with self._listings_lock:
            self._listings.clear()
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
        """One range read (see :meth:`_read`)."""
        return [entry for entry in self._read(prefix, keys_only=False).values() if entry is not None]

    def names(self, directory: str) -> builtins.list[str]:
        """One keys-only range read (see :meth:`_read`): an entry's lease
        takes its key with it, so every key listed is live."""
        start = len(self._key(directory))
        found = (key[start:].decode() for key in self._read(directory, keys_only=True))
        return [name for name in found if "/" not in name]

    def _read(self, prefix: str, keys_only: bool) -> dict[bytes, Entry | None]:
        """The keys under ``prefix`` (and their entries unless ``keys_only``),
        in key order: one linearizable range read, mostly.

        A read of ``_KEEP_FROM`` to ``_KEEP_UPTO`` keys is kept
        (``_KEPT_LISTINGS`` ranges), and the next read of the range asks etcd only for the keys
        created (keys-only) or written since (``min_create_revision`` /
        ``min_mod_revision``). etcd still counts every key of the range: if
        the count is the new keys plus the kept keys not among them, no kept
        key is gone (deleted, or taken by a lease that expired or was
        revoked, or deleted and created again: each lowers the count), so
        the kept entries updated with the new ones are exactly the range at
        the answer's revision. Otherwise (or if the answer comes from another
        cluster, or an earlier revision) the whole range is read at once: a
        second request, and the next read of that range is a whole one too,
        until a whole read finds no kept key gone."""
        request: _Json = self._range(prefix)
        if keys_only:
            request["keys_only"] = True
        kind = ("keys" if keys_only else "entries", prefix)
        with self._listings_lock:
            kept = self._listings.get(kind)
        if kept is not None and kept.calm:
            since = "min_create_revision" if keys_only else "min_mod_revision"
            answer = self._call("kv/range", {**request, since: kept.revision + 1}, idempotent=True)
            cluster, revision = self._revision(answer)
            fresh = self._entries(answer, keys_only)
            unchanged = len(kept.entries) - sum(1 for key in fresh if key in kept.entries)
            if (cluster == kept.cluster and revision >= kept.revision
                    and int(answer.get("count", 0)) - len(fresh) == unchanged):
                entries = kept.entries
                if fresh:
                    entries = dict(sorted({**entries, **fresh}.items()))
                return self._keep(kind, _Listing(cluster, revision, entries, True))
        answer = self._call("kv/range", request, idempotent=True)
        cluster, revision = self._revision(answer)
        entries = self._entries(answer, keys_only)
        calm = kept is None or kept.cluster != cluster or all(key in entries for key in kept.entries)
        return self._keep(kind, _Listing(cluster, revision, entries, calm))

    def _entries(self, answer: _Json, keys_only: bool) -> dict[bytes, Entry | None]:
        kvs = answer.get("kvs", ())
        if keys_only:
            return {base64.b64decode(kv["key"]): None for kv in kvs}
        return {base64.b64decode(kv["key"]): self._entry(kv) for kv in kvs}

    @staticmethod
    def _revision(answer: _Json) -> tuple[str, int]:
        """(cluster id, revision) of an answer's header."""
        header = answer.get("header") or {}
        return str(header.get("cluster_id", "")), int(header.get("revision", 0))

    def _keep(self, kind: tuple[str, str], listing: _Listing) -> dict[bytes, Entry | None]:
        """Keep ``listing`` as the range's last read if it is large enough
        (and no later read is kept); its entries."""
        with self._listings_lock:
            kept = self._listings.get(kind)
            if not _KEEP_FROM <= len(listing.entries) <= _KEEP_UPTO:
                if kept is not None and kept.revision <= listing.revision:
                    del self._listings[kind]
            elif kept is None or kept.cluster != listing.cluster or kept.revision <= listing.revision:
                self._listings[kind] = listing
                self._listings.move_to_end(kind)
                while len(self._listings) > _KEPT_LISTINGS:
                    self._listings.popitem(last=False)
        return listing.entries

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
        return self._watch(key, callback)

    def watch_unchanged(self, entry: Entry, callback: Callable[[], None]) -> tuple[Watch, bool]:
        """As the base's; a watch on a queue entry is not called for the
        changes up to ``entry``'s, which its queue's stream may tell late
        (a lingering stream tells the entry's creation after the read that
        returned it): no wake-up and read for nothing."""
        watch = self._watch(entry.key, callback, entry.version)
        return watch, self._still_holds(watch, entry)

    def _watch(self, key: str, callback: Callable[[], None], seen: int = 0) -> Watch:
        """:meth:`watch`; one on a queue entry is not called for changes at
        or before revision ``seen``."""
        if self._closed:
            self._refuse()
        if not key.endswith("/") and _QUEUE_ENTRY.match(key.rpartition("/")[2]):
            return self._watch_entry(key, callback, seen)
        request: _Json = {"key": _b64(self._key(key))}
        if key.endswith("/"):
            request = self._range(key)
        watch = CallbackWatch(callback, lambda _watch: self._hub.drop(stream))
        stream = self._hub.open(request, lambda _keys: self._dispatcher.fire(watch), lambda: watch.cancelled)
        return watch

    def _watch_entry(self, key: str, callback: Callable[[], None], seen: int) -> Watch:
        """A watch on a queue entry, through its queue's shared stream
        (opened if need be: the only round trip), not called for changes at
        or before revision ``seen``."""
        directory = key[: key.rfind("/") + 1]
        fresh: _QueueWatch | None = None
        while True:
            with self._queues_lock:  # never held across I/O (also a real lock for green threads)
                queue = self._queues.get(directory)
                if queue is None and fresh is not None:
                    queue = self._queues[directory] = fresh
                    fresh = None
                if queue is not None:
                    watch = _EntryWatch(callback, functools.partial(self._unwatch_entry, directory, queue),
                                        queue, self._key, seen)
                    queue.add(self._key(key), watch)
                    break
            fresh = _QueueWatch(self._dispatcher)
            fresh.opened(self._hub.open(self._range(directory), fresh.fire, fresh.is_closed))
        if fresh is not None:  # another thread opened the queue's watch meanwhile
            assert fresh.stream is not None
            fresh.closed = True
            self._hub.drop(fresh.stream)
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

