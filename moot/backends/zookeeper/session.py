"""ZooKeeper sessions as moot sessions: open (with its record holding the
password), refresh, close, expire any session by attaching to it, last seen,
and the removal of sequential znodes whose creation reply was lost."""

from __future__ import annotations

import contextlib
import time

from kazoo.exceptions import ConnectionLoss, NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent, ZnodeStat

from moot import deadline
from moot.backends.zookeeper.client import _DEFAULT_TTL, _bounded, _Client, _elapsed
from moot.backends.zookeeper.connection import Result, _Conn, _hex, _Session, _session_int
from moot.backends.zookeeper.znodes import _SEQ, _TAG
from moot.errors import ConnectionLost, SessionExpired
from moot.realthreads import wait_until as _await


class _Sessions(_Client):
    """The session primitives."""

    def _live_session(self, conn: _Conn) -> _Session:
        """The session ephemeral znodes bind to, or SessionExpired."""
        session = self._session
        if session is None or session.expired:
            raise SessionExpired("no live ZooKeeper session; ephemeral keys need one")
        current = conn.session()
        if current is not None and current != session.sid:  # kazoo moved on to a new session
            session.expired = True
            raise SessionExpired("the ZooKeeper session expired")
        return session

    def _check_owner(self, conn: _Conn, path: str, stat: ZnodeStat, session: _Session) -> None:
        if stat.ephemeralOwner != session.sid:  # created by a session kazoo opened after an expiry
            session.expired = True
            conn.zk.delete_async(path)
            raise SessionExpired("the ZooKeeper session expired")

    @_bounded
    def open_session(self, ttl: float) -> str:
        with self._serialized():
            old = self._session
            conn = self._client()
            sid = conn.session()
            if conn.ttl != ttl or sid is None or (old is not None and sid == old.sid):
                conn = self._replace(ttl)
                sid = conn.session()
            if sid is None:
                raise ConnectionLost(f"ZooKeeper at {self.url.redacted()}: disconnected while opening a session")
            password = conn.zk.client_id[1]
            session = _Session(sid, ttl)
            created = conn.zk.create_async(self._record(_hex(sid)), password, ephemeral=True, makepath=True,
                                           include_data=True)
            watched = self._watch_record(conn, session)  # sent together: answered after the creation
            _, stat = self._wait(created)
            self._wait(watched)
            if stat.ephemeralOwner != sid:
                raise ConnectionLost("the ZooKeeper session changed while it was being opened")
            self.granted_ttl = None
            self._grant(session, conn)
            with self._lock:
                self._session = session
                self._own.clear()
            return session.id

    def _watch_record(self, conn: _Conn, session: _Session) -> Result:
        """An ``exists`` watch on the session's record (the request, answered
        after any sent before it): the record found missing, or deleted
        later, marks the session's record gone, and its next refresh raises
        SessionExpired. Armed when the session opens and again after each
        reconnection (kazoo drops its watches with the connection)."""
        path = self._record(session.id)

        def on_event(event: WatchedEvent) -> None:
            if event.type == EventType.DELETED:
                session.record_gone = True
            elif event.type != EventType.NONE:  # not a connection state: watch on
                self._watch_record(conn, session)

        def on_answer(result: Result) -> None:
            if result.successful() and (result.value is None or result.value.ephemeralOwner != session.sid):
                session.record_gone = True

        found = conn.zk.exists_async(path, watch=on_event)
        found.rawlink(on_answer)
        return found

    @_bounded
    def refresh_session(self) -> None:
        """One request: a sync, answered only once the server has heard from
        the ensemble's leader (the server renews the session when it receives
        it, after this call started). A session that ended is never answered
        so: its end reaches the server before the sync's answer, and the
        server then closes the connection (kazoo reports LOST when it
        reconnects); a sync sent after kazoo moved on to a new session is
        told apart by the session id. The record deleted (a watch sees it)
        ends the session as well."""
        conn = self._conn
        if conn is None:
            raise SessionExpired("no ZooKeeper session")
        session = self._live_session(conn)
        if not conn.live.is_set():
            self._settle(conn, session)
            if not conn.live.is_set():
                raise ConnectionLost(f"disconnected from ZooKeeper at {self.url.redacted()}; "
                                     f"still reconnecting{_elapsed()}")
        started = time.monotonic()
        synced = conn.zk.sync_async("/")
        try:
            # An answer later than the session timeout proves nothing: the session may be gone by then.
            with deadline.bounded(started + min(session.ttl, conn.granted() or session.ttl)):
                self._wait(synced, session=True)
        except ConnectionLost:
            self._settle(conn, session)  # SessionExpired if the connection dropped because it ended
            raise
        if session.expired or session.record_gone or conn.session() != session.sid:
            session.expired = True
            raise SessionExpired("the ZooKeeper session expired")
        if self._orphans:
            with contextlib.suppress(ConnectionLost):  # the session is renewed; orphans wait for the next refresh
                self._remove_orphans(conn)

    def _settle(self, conn: _Conn, session: _Session) -> None:
        """While disconnected, wait (within the deadline, never raising
        ConnectionLost) for kazoo's reconnection, which tells whether
        ``session`` lives on or has ended (LOST, as after an eviction; kazoo
        then connects with a new session); SessionExpired if it has ended."""
        _await(lambda: conn.live.is_set() or session.expired, conn.live.wait, self._budget())
        self._live_session(conn)

    @_bounded
    def close_session(self) -> None:
        with self._serialized():
            with self._lock:
                session, self._session = self._session, None
                self._own.clear()
                conn = self._conn
            if session is None or conn is None:
                return
            current = conn.session()
            if current is not None and current != session.sid:
                return  # that session already expired; this client runs a fresh one
            with self._lock:
                self._conn = None
            self._stop(conn.zk, self._budget())  # ends the session: its ephemeral znodes go
            if self._watches and not self._closed:
                with contextlib.suppress(ConnectionLost):  # else the next operation reconnects
                    self._replace(conn.ttl)

    @_bounded
    def expire_session(self, session_id: str) -> bool:
        sid = _session_int(session_id)
        if sid is None:
            return False
        ended = False
        for _ in range(3):  # its owner may attach again before the close is served: then again
            try:
                password, stat = self._wait(self._client().zk.get_async(self._record(_hex(sid))), NoNodeError)
            except NoNodeError:
                return ended
            except ConnectionLost:
                if ended:  # it was this backend's own session: its client is starting a new one
                    return True
                raise
            if stat.ephemeralOwner != sid:
                return ended
            ended = self._attach_and_close(sid, password) or ended
        return ended

    def _attach_and_close(self, sid: int, password: bytes) -> bool:
        """Attach a second client to session ``sid`` and close it: the server
        ends the session as on expiry. False if it could not attach."""
        intruder = self._new_client(self._session.ttl if self._session else _DEFAULT_TTL, client_id=(sid, password))
        try:
            self._run(intruder)
            return intruder.client_id is not None and intruder.client_id[0] == sid
        finally:
            self._stop(intruder, self._budget())

    @_bounded
    def session_last_seen(self, session_id: str) -> float | None:
        sid = _session_int(session_id)
        if sid is None:
            return None
        stat = self._wait(self._client().zk.exists_async(self._record(_hex(sid))))
        return time.time() if stat is not None and stat.ephemeralOwner == sid else None
    def _track_orphan(self, conn: _Conn, created: Result, parent: str, tag: bytes) -> None:
        """A creation whose outcome is unknown: remove its znode if it was made."""
        def settled(result: Result) -> None:
            if result.successful():
                conn.zk.delete_async(result.value[0])
            elif isinstance(result.exception, ConnectionLoss):  # maybe made: look for its tag later
                with self._lock:
                    self._orphans[tag] = parent

        created.rawlink(settled)

    def _remove_orphans(self, conn: _Conn) -> None:
        with self._lock:
            orphans, self._orphans = self._orphans, {}
        for tag, parent in orphans.items():
            try:
                names = self._wait(conn.zk.get_children_async(parent), NoNodeError)
                reads = [(f"{parent}/{n}", conn.zk.get_async(f"{parent}/{n}")) for n in names]
                for path, result in reads:
                    try:
                        data, _ = self._wait(result, NoNodeError)
                    except NoNodeError:
                        continue
                    if data[:1 + _TAG] == _SEQ + tag:
                        self._wait(conn.zk.delete_async(path), NoNodeError)
            except NoNodeError:
                pass
            except ConnectionLost:
                with self._lock:
                    self._orphans.update(orphans)
                raise
