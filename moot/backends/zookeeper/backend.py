"""The ZooKeeper backend's key primitives: get, create, compare-and-set,
delete, list, and sequential keys (create_sequential, enqueue)."""

from __future__ import annotations

import builtins
import contextlib
import os
import re
from collections.abc import Sequence

from kazoo.exceptions import BadVersionError, NoChildrenForEphemeralsError, NodeExistsError, NoNodeError, NotEmptyError
from kazoo.protocol.states import ZnodeStat

from moot.backends.base import Entry
from moot.backends.zookeeper.client import _bounded
from moot.backends.zookeeper.connection import Result, _Conn, _hex
from moot.backends.zookeeper.session import _Sessions
from moot.backends.zookeeper.sweeper import AT_CLOSE, Paths, Sweeper
from moot.backends.zookeeper.watches import _Watches
from moot.backends.zookeeper.znodes import _KEY, _SEGMENT, _SEQ, _TAG, _header, _parent, _split, _value
from moot.errors import BackendError, ConnectionLost
from moot.url import BackendURL

#: Listings whose names :meth:`ZooKeeperBackend.list` remembers (the most
#: recent ones), and the most names it remembers of one.
_REMEMBERED_PARENTS = 256
_REMEMBERED_NAMES = 1000
#: Directories known to exist that the backend remembers (the most recent).
_REMEMBERED_DIRS = 4096
#: Names past the highest one a directory of sequential znodes had that a
#: listing of it also reads (see ZooKeeperBackend._foreseen).
_GUESSED = 8
_COUNTER = re.compile(r"[0-9]{10}\Z")


class ZooKeeperBackend(_Sessions, _Watches):
    """Primitives over ZooKeeper; see the package docstring."""

    kept_alive_by_client = True  # kazoo pings the server by itself

    def __init__(self, url: BackendURL, options: dict[str, object]):
        super().__init__(url, options)
        self._sweeper = Sweeper(self._remove_directories)

    def close(self) -> None:
        """First remove the directories released last (close() has released
        the locks), at the version of a mere parent never changed, not
        waiting: the close request sent next is answered after them, and
        they are usually written with its fsync. The server refuses a
        directory still in use (NotEmpty), which the layout keeps from ever
        being a key (see :meth:`sweep`)."""
        if not self._forked:
            left, conn = self._sweeper.close()[-AT_CLOSE:], self._conn
            if conn is not None and conn.zk.connected and not self._closed:
                for paths in left:
                    for path in paths:
                        conn.zk.delete_async(path, 0)
        super().close()

    def forget_after_fork(self) -> None:
        self._sweeper = Sweeper.stopped()  # the parent's lock may have been held at fork
        super().forget_after_fork()

    def _entry(self, path: str, data: bytes, stat: ZnodeStat) -> Entry | None:
        split = _split(data)
        key = self._key(path)
        if split is None or key is None:
            return None
        value, sequential = split
        owner = _hex(stat.ephemeralOwner) if stat.ephemeralOwner else None
        return Entry(key, value, stat.mzxid, stat.czxid if sequential else None, owner)

    @_bounded
    def get(self, key: str) -> Entry | None:
        path = self._path(key)
        try:
            data, stat = self._wait(self._client().zk.get_async(path), NoNodeError)
        except NoNodeError:
            return None
        return self._entry(path, data, stat)

    @_bounded
    def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> Entry | None:
        data = _KEY + _value(value)
        conn = self._client()
        session = self._live_session(conn) if ephemeral else None
        path = self._path(key)
        refused = 0
        while True:
            self._send_parents(conn, _parent(path))
            try:
                _, stat = self._wait(conn.zk.create_async(path, data, ephemeral=ephemeral, include_data=True),
                                     NodeExistsError, NoNodeError, NoChildrenForEphemeralsError,
                                     session=ephemeral)
            except NoNodeError:
                refused += 1
                self._make_parents(conn, _parent(path), refused)
                continue
            except NoChildrenForEphemeralsError:
                raise BackendError(f"cannot create {key!r}: on ZooKeeper an ephemeral key has no keys "
                                   "under it") from None
            except NodeExistsError:
                if ephemeral:
                    return None
                try:  # a mere parent znode becomes a key; an existing key stays
                    old, stat = self._wait(conn.zk.get_async(path), NoNodeError)
                    if _split(old) is not None:
                        return None
                    stat = self._wait(conn.zk.set_async(path, data, stat.version), NoNodeError, BadVersionError)
                except (NoNodeError, BadVersionError):
                    continue  # changed meanwhile: try again
                return self._entry(path, data, stat)
            if session is not None:
                self._check_owner(conn, path, stat, session)
            return self._entry(path, data, stat)

    @_bounded
    def compare_and_set(self, key: str, value: bytes, version: int) -> Entry | None:
        value = _value(value)
        conn = self._client()
        path = self._path(key)
        mine = self._own.get(path)
        try:
            if mine is not None and mine[0] == version:
                _, znode_version, header = mine
            else:
                old, stat = self._wait(conn.zk.get_async(path), NoNodeError)
                if _split(old) is None or stat.mzxid != version:
                    return None
                znode_version, header = stat.version, _header(old)
            data = header + value
            stat = self._wait(conn.zk.set_async(path, data, znode_version), NoNodeError, BadVersionError)
        except (NoNodeError, BadVersionError):
            return None
        with self._lock:
            if path in self._own:
                self._own[path] = (stat.mzxid, stat.version, header)
        return self._entry(path, data, stat)

    @_bounded
    def delete(self, key: str, version: int | None = None) -> bool:
        conn = self._client()
        path = self._path(key)
        mine = self._own.get(path)
        if mine is not None and version in (None, mine[0]):  # my sequential key: one round trip
            try:
                self._wait(conn.zk.delete_async(path, -1 if version is None else mine[1]),
                           NoNodeError, BadVersionError, NotEmptyError)
                self._own.pop(path, None)
                return True
            except NoNodeError:
                self._own.pop(path, None)
                return False
            except BadVersionError:
                return False
            except NotEmptyError:
                pass  # persistent, and the parent of other keys: see below
        while True:
            try:
                data, stat = self._wait(conn.zk.get_async(path), NoNodeError)
                if _split(data) is None or (version is not None and stat.mzxid != version):
                    return False
                self._wait(conn.zk.delete_async(path, stat.version), NoNodeError, BadVersionError, NotEmptyError)
                return True
            except NoNodeError:
                return False
            except BadVersionError:
                if version is not None:
                    return False  # changed meanwhile
            except NotEmptyError:  # also the parent of other keys: keep it as a mere parent
                try:
                    self._wait(conn.zk.set_async(path, b"", stat.version), NoNodeError, BadVersionError)
                    return True
                except NoNodeError:
                    return False
                except BadVersionError:
                    if version is not None:
                        return False

    @_bounded
    def list(self, prefix: str) -> builtins.list[Entry]:
        """One request when the names under the prefix's parent are foreseen
        (see :meth:`_foreseen`; a lock waiter woken by its predecessor's
        release): the listing and the data of those names are read in one
        multi-read; only names not foreseen are read in a second request."""
        conn = self._client()
        head, _, start = prefix.rpartition("/")
        parent = self._path(head)
        sent = self._send_listing(conn, parent, start)
        if sent is None:
            return self._walk(conn, parent, start, conn.zk.get_children_async(parent), {})
        return self._receive_listing(conn, parent, start, sent, {})

    def _foreseen(self, parent: str, start: str) -> builtins.list[str]:
        """The paths of the names a listing of ``parent`` (those starting with
        ``start``) may find: those its last listing found and, under a
        directory of sequential znodes (named by the parent's counter, which
        every creation and deletion of a child moves on), the next few names.
        A guess, never trusted: the listing decides what is there."""
        with self._lock:
            seen = self._listed.get(parent, ())
        names = [name for name in seen if name.startswith(start)]
        if seen and all(_COUNTER.match(name) for name in seen):
            top = max(int(name) for name in seen)
            names += [name for name in (f"{n:010d}" for n in range(top + 1, min(top + 1 + _GUESSED, 2 ** 31)))
                      if name.startswith(start)]
        return [f"{parent}/{name}" for name in names]

    def _send_listing(self, conn: _Conn, parent: str, start: str) -> tuple[Result, builtins.list[str]] | None:
        """The listing of ``parent`` with the data of its foreseen names, sent in one multi-read (or None)."""
        foreseen = self._foreseen(parent, start)
        return self._reads.send_listing(conn.zk, parent, foreseen) if foreseen else None

    def _receive_listing(self, conn: _Conn, parent: str, start: str, sent: tuple[Result, builtins.list[str]],
                         known: dict[str, tuple[bytes, ZnodeStat]]) -> builtins.list[Entry]:
        names, read = self._reads.receive_listing(sent, self._wait)
        gone = {path for path, answer in read.items() if answer is None}  # deleted after the listing
        known = {**{path: answer for path, answer in read.items() if answer is not None}, **known}
        return self._walk(conn, parent, start, names or [], known, gone)

    @_bounded
    def names(self, directory: str) -> builtins.list[str]:
        """One getChildren: the entries under a directory of entries are its
        child znodes, which ZooKeeper removes with their session."""
        path = self._path(directory.rstrip("/"))
        try:
            children = self._wait(self._client().zk.get_children_async(path), NoNodeError)
        except NoNodeError:
            return []
        return sorted(name for name in children if _SEGMENT.match(name))

    def _walk(self, conn: _Conn, parent: str, start: str, children: Result | builtins.list[str],
              known: dict[str, tuple[bytes, ZnodeStat]], gone: builtins.set[str] | None = None) -> builtins.list[Entry]:
        """Every key under ``parent`` whose name there starts with ``start``,
        level by level: the listings of one level are in flight together,
        then the data of all their children is read in one request, but for
        those already ``known`` (read no earlier than the listing) or ``gone``
        (found deleted after it). ``children``: the parent's listing, or
        the request for it."""
        level: builtins.list[tuple[str, Result | builtins.list[str]]] = [(parent, children)]
        entries: builtins.list[Entry] = []
        while level:
            found: builtins.list[tuple[str, bytes, ZnodeStat]] = []
            unread: builtins.list[str] = []
            for path, listing in level:
                try:
                    names = listing if isinstance(listing, builtins.list) else self._wait(listing, NoNodeError)
                except NoNodeError:
                    continue  # deleted meanwhile
                if path == parent:
                    self._remember(parent, start, names)
                for name in names:
                    if _SEGMENT.match(name) and (path != parent or name.startswith(start)):
                        child = f"{path}/{name}"
                        if child in known:
                            found.append((child, *known[child]))
                        elif gone is None or child not in gone:
                            unread.append(child)
            found += self._read_all(conn, unread)
            level = []
            for path, data, stat in found:
                entry = self._entry(path, data, stat)
                if entry is not None:
                    entries.append(entry)
                if stat.numChildren:
                    level.append((path, conn.zk.get_children_async(path)))
        return sorted(entries, key=lambda e: e.key)

    def _remember(self, parent: str, start: str, names: builtins.list[str]) -> None:
        """Note the names a listing of ``parent`` found, for the next one (see :meth:`list`)."""
        names = [name for name in names if _SEGMENT.match(name) and name.startswith(start)]
        with self._lock:
            self._listed.pop(parent, None)
            if names and len(names) < _REMEMBERED_NAMES:
                self._listed[parent] = tuple(names)
                while len(self._listed) > _REMEMBERED_PARENTS:
                    del self._listed[next(iter(self._listed))]  # the least recently listed

    def _read_all(self, conn: _Conn, paths: builtins.list[str]) -> builtins.list[tuple[str, bytes, ZnodeStat]]:
        """(path, data, stat) of each of ``paths`` that exists (see multiread.py)."""
        return self._reads.read(conn.zk, paths, self._wait)

    # -- sequence ---------------------------------------------------------
    @_bounded
    def create_sequential(self, prefix: str, value: bytes, *, ephemeral: bool = True) -> Entry:
        return self._sequential(prefix, value, ephemeral, listing=False)[0]

    @_bounded
    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, builtins.list[Entry]]:
        """One round trip when the queue's parent exists: the creation and the
        listing are sent together (ZooKeeper answers a client in order)."""
        return self._sequential(prefix, value, True, listing=True)

    def _send_parents(self, conn: _Conn, directory: str) -> None:
        """Send, not waiting for them, the creations of ``directory`` and of
        its parents below the root that are not known to exist, and take them
        as made. A creation sent next finds them (ZooKeeper runs one client's
        requests in order) in the same round trip; sent together, they are
        usually written with one fsync. A lock or group used for the first
        time costs one round trip, not an existence check and a creation per
        level after a refused creation (10 requests, ~5 fsyncs). One already
        there answers NodeExists, ignored; a creation refused for another
        reason fails the next one too, and its caller says why. Where a
        directory taken as made is gone, the next creation fails with
        NoNodeError: :meth:`_forget_made`, then ensure_path as before."""
        missing = []
        path = directory
        with self._lock:
            while path.startswith(self._root + "/") and path not in self._made:
                missing.append(path)
                path = _parent(path)
            for made in missing:
                self._made[made] = None
            while len(self._made) > _REMEMBERED_DIRS:
                del self._made[next(iter(self._made))]
        for path in reversed(missing):
            conn.zk.create_async(path, b"")

    def sweep(self, directories: Sequence[str]) -> None:
        paths = tuple(self._dir(directory) for directory in directories)
        if paths and all(path.startswith(self._root + "/") for path in paths):
            self._sweeper.add(paths)

    @_bounded
    def _remove_directories(self, batch: builtins.list[Paths]) -> None:
        """Remove the released directories of ``batch`` that are empty: one
        pipelined read of every level, then one pipelined removal of each
        chain's empty levels, deepest first, each at the version read. A
        level goes if it is a mere parent whose only child, if any, is the
        level below it, removed just before. The server refuses a removal
        of a znode that has a child by then (NotEmpty, and so its parents
        too) or that was made a key (BadVersion)."""
        conn = self._client()
        reads = [(paths, [conn.zk.exists_async(path) for path in paths]) for paths in batch]
        removals: builtins.list[tuple[str, Result]] = []
        gone: builtins.list[str] = []
        for paths, sent in reads:
            below = 0  # children the level will have lost: the level below it, if removed here
            for path, answer in zip(paths, sent, strict=True):
                stat = self._wait(answer)
                if stat is None:  # removed by another process: the level above may be empty
                    gone.append(path)
                    below = 0
                    continue
                if stat.numChildren != below or stat.dataLength or stat.ephemeralOwner:
                    break
                removals.append((path, conn.zk.delete_async(path, stat.version)))
                below = 1
        for path, sent in removals:
            try:
                self._wait(sent, NoNodeError, NotEmptyError, BadVersionError)
            except (NotEmptyError, BadVersionError):
                continue  # in use again: kept
            except NoNodeError:
                pass
            gone.append(path)
        with self._lock:
            for path in gone:
                self._made.pop(path, None)
                self._listed.pop(path, None)

    def _make_parents(self, conn: _Conn, directory: str, refused: int) -> None:
        """After the ``refused``-th creation refused for want of a parent:
        the first time, only forget that ``directory`` and its parents were
        made, so that the next try sends their creations with it (one round
        trip: another process removed the released directory, see
        :meth:`sweep`); after that, make them one level after the other,
        raising any refusal but a level removed again meanwhile (no
        permission, say)."""
        self._forget_made(directory)
        if refused > 1:
            with contextlib.suppress(NoNodeError):
                self._wait(conn.zk.ensure_path_async(directory), NoNodeError)

    def _forget_made(self, directory: str) -> None:
        """``directory`` and its parents may be gone: send their creations again next time."""
        with self._lock:
            path = directory
            while path.startswith(self._root + "/"):
                self._made.pop(path, None)
                path = _parent(path)

    def _sequential(self, prefix: str, value: bytes, ephemeral: bool,
                    listing: bool) -> tuple[Entry, builtins.list[Entry]]:
        value = _value(value)
        conn = self._client()
        session = self._live_session(conn) if ephemeral else None
        parent = self._dir(prefix)
        tag = os.urandom(_TAG)
        data = _SEQ + tag + value
        refused = 0
        while True:
            self._send_parents(conn, parent)
            created = conn.zk.create_async(parent + "/", data, ephemeral=ephemeral, sequence=True,
                                           include_data=True)
            sent = self._send_listing(conn, parent, "") if listing else None
            children = conn.zk.get_children_async(parent) if listing and sent is None else None
            try:
                path, stat = self._wait(created, NoNodeError, session=ephemeral)
            except NoNodeError:
                refused += 1
                self._make_parents(conn, parent, refused)
                continue
            except ConnectionLost:
                self._track_orphan(conn, created, parent, tag)
                raise
            break
        if session is not None:
            self._check_owner(conn, path, stat, session)
        with self._lock:
            self._own[path] = (stat.mzxid, stat.version, _header(data))
        entry = self._entry(path, data, stat)
        assert entry is not None
        if sent is not None:
            return entry, self._receive_listing(conn, parent, "", sent, {path: (data, stat)})
        if children is None:
            return entry, []
        return entry, self._walk(conn, parent, "", children, {path: (data, stat)})
