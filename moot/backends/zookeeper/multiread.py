"""Many znodes read in one round trip: ZooKeeper's multi-read request (3.6+),
which kazoo has no call for, so it is built here on kazoo internals
(``KazooClient._call`` and its serialization helpers) and nowhere else, with
its fallback to one read per znode. :data:`TESTED_KAZOO` names the kazoo
versions it is tested with; a test fails on any other."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import EXCEPTIONS, MarshallingError, NoNodeError, UnimplementedError
from kazoo.protocol.serialization import (
    GetChildren,
    GetData,
    int_struct,
    multiheader_struct,
    read_buffer,
    read_string,
    stat_struct,
)
from kazoo.protocol.states import ZnodeStat

from moot.errors import BackendError, ConnectionLost

#: kazoo releases (major, minor) whose internals this module is tested with.
TESTED_KAZOO = ((2, 11),)

_MULTI_HEADER = multiheader_struct
_MULTIREAD_BATCH = 1000  # reads per multi-read request
#: Bytes of paths per multi-read request: the server drops the connection of
#: any request over its jute.maxbuffer (1 MiB by default), so long names in a
#: big directory must be split, or that listing would fail for ever.
_MULTIREAD_BYTES = 256 * 1024

log = logging.getLogger("moot.backends.zookeeper")

Result = Any  # a kazoo IAsyncResult


class _MultiRead:
    """ZooKeeper's multi-read request (opcode 22, ZooKeeper 3.6+): the data
    and stat of many znodes in one round trip; kazoo 2.11 has no call for it.
    Its answer lists, per path, ``(data, stat)`` or None (no such znode).
    With ``children_of``, the request starts with a getChildren of that
    znode, answered first as its list of names (None: no such znode); the
    server runs the reads in order, so the reads see the tree no older than
    the listing."""

    type = 22

    def __init__(self, paths: list[str], children_of: str | None = None):
        self.paths = paths
        self.children_of = children_of

    def serialize(self) -> bytes:
        parts = [_MULTI_HEADER.pack(GetData.type, False, -1) + bytes(GetData(path, None).serialize())
                 for path in self.paths]
        if self.children_of is not None:
            parts.insert(0, _MULTI_HEADER.pack(GetChildren.type, False, -1)
                         + bytes(GetChildren(self.children_of, None).serialize()))
        end: bytes = _MULTI_HEADER.pack(-1, True, -1)
        return b"".join(parts) + end

    def deserialize(self, data: bytes, offset: int) -> list[Any]:
        answers: list[Any] = []
        while True:
            kind, done, _ = _MULTI_HEADER.unpack_from(data, offset)
            offset += _MULTI_HEADER.size
            if done:
                return answers
            if kind == GetData.type:
                value, offset = read_buffer(data, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(data, offset))
                offset += stat_struct.size
                answers.append((bytes(value or b""), stat))
            elif kind == GetChildren.type:
                count = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                names = []
                for _ in range(max(0, count)):
                    name, offset = read_string(data, offset)
                    names.append(name)
                answers.append(names)
            elif kind == -1:  # an error result: its code follows
                code = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                if code != NoNodeError.code:
                    raise EXCEPTIONS[code]()
                answers.append(None)
            else:
                raise MarshallingError()



class MultiReader:
    """Reads many znodes: one multi-read request per batch while the server
    answers them, else (a server before 3.6, found out once) one read per znode."""

    def __init__(self, where: str) -> None:
        self.where = where  # the server, as messages name it
        self.supported: bool | None = None  # does the server answer multi-reads? (None: not tried yet)

    def read(self, zk: KazooClient, paths: list[str],
             wait: Callable[..., Any]) -> list[tuple[str, bytes, ZnodeStat]]:
        """(path, data, stat) of each of ``paths`` that exists, each answer
        waited for with ``wait(result, *expected_errors)``."""
        if not paths:
            return []
        if self.supported is not False:
            batches: list[list[str]] = [[]]
            size = 0
            for path in paths:
                cost = _MULTI_HEADER.size + 5 + len(path.encode())
                if batches[-1] and (len(batches[-1]) >= _MULTIREAD_BATCH or size + cost > _MULTIREAD_BYTES):
                    batches.append([])
                    size = 0
                batches[-1].append(path)
                size += cost
            pending = []
            for batch in batches:
                result = zk.handler.async_result()
                zk._call(_MultiRead(batch), result)
                pending.append((batch, result))
            out: list[tuple[str, bytes, ZnodeStat]] = []
            try:
                for batch, result in pending:
                    answers = wait(result, UnimplementedError, MarshallingError)
                    out += [(path, *answer) for path, answer in zip(batch, answers, strict=True)
                            if answer is not None]
            except (UnimplementedError, MarshallingError, struct.error) as exc:
                if self.supported:
                    raise BackendError(f"ZooKeeper answered a multi-read with {type(exc).__name__}") from None
                # ZooKeeper before 3.6 (it also drops the connection; kazoo reconnects, the session lives)
                log.info("ZooKeeper at %s has no multi-read (%s): one read per znode",
                         self.where, type(exc).__name__)
                self.supported = False
                try:
                    return _one_by_one(zk, paths, wait)
                except ConnectionLost:  # the server dropped the connection after refusing: kazoo reconnects
                    return _one_by_one(zk, paths, wait)  # (requests wait inside kazoo until it has)
            else:
                self.supported = True
                return out
        return _one_by_one(zk, paths, wait)

    def send_listing(self, zk: KazooClient, parent: str, paths: list[str]) -> tuple[Result, list[str]] | None:
        """Send one multi-read of the children of ``parent`` and of the data
        and stat of each of ``paths`` (read after the listing); see
        :meth:`receive_listing`. None (nothing sent) unless the server is
        known to answer multi-reads and ``paths`` fit in one request."""
        size = sum(_MULTI_HEADER.size + 5 + len(path.encode()) for path in paths)
        if self.supported is not True or len(paths) >= _MULTIREAD_BATCH or size > _MULTIREAD_BYTES:
            return None
        result = zk.handler.async_result()
        zk._call(_MultiRead(paths, children_of=parent), result)
        return result, paths

    @staticmethod
    def receive_listing(sent: tuple[Result, list[str]], wait: Callable[..., Any]
                        ) -> tuple[list[str] | None, dict[str, tuple[bytes, ZnodeStat] | None]]:
        """The answer to :meth:`send_listing`: the children (None: no such
        znode) and, per path, ``(data, stat)`` or None (no such znode)."""
        result, paths = sent
        try:
            names, *answers = wait(result, UnimplementedError, MarshallingError)
        except (UnimplementedError, MarshallingError, struct.error) as exc:
            raise BackendError(f"ZooKeeper answered a multi-read with {type(exc).__name__}") from None
        return names, dict(zip(paths, answers, strict=True))


def _one_by_one(zk: KazooClient, paths: list[str], wait: Callable[..., Any]) -> list[tuple[str, bytes, ZnodeStat]]:
    """(path, data, stat) of each of ``paths`` that exists, one read request each (sent together)."""
    reads = [(path, zk.get_async(path)) for path in paths]
    out = []
    for path, result in reads:
        try:
            data, stat = wait(result, NoNodeError)
        except NoNodeError:
            continue
        out.append((path, data, stat))
    return out

