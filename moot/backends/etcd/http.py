"""HTTP to etcd's v3 JSON gateway: a pool of keep-alive connections, requests bounded
by the caller's deadline and resent where that is safe, and watch streams opened on raw sockets."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, TypeVar

from moot import deadline
from moot.backends._support.loop import readable
from moot.backends._support.tls import handshake_failure
from moot.errors import (
    AuthenticationFailed,
    BackendError,
    ConnectionLost,
    MootError,
    PermissionDenied,
    SessionExpired,
)
from moot.realthreads import threading
from moot.url import BackendURL

_Json = dict[str, Any]

#: gRPC status codes the gateway reports for an engine that is (now) unusable.
_UNAVAILABLE_CODES = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE
_UNAUTHENTICATED = 16
#: gRPC's PermissionDenied: the user's roles do not cover the keys (or the operation).
_PERMISSION_DENIED = 7
_FIX_CREDENTIALS = "fix user:password in the URL (etcd://user:password@host:port), or the server's users"
#: Seconds an idempotent request waits for its first answer before it is
#: sent again to the next host (doubled at each resend, within the deadline).
_ATTEMPT = 1.0
#: Set in an answer that came from a resent request (an earlier attempt may
#: have been applied).
_RESENT = "moot-resent"
#: The network failures of a request (eventlet raises EOFError for a socket
#: closed under a reader); everything else is a bug and propagates.
_T = TypeVar("_T")
_NETWORK_ERRORS = (OSError, EOFError, http.client.HTTPException)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # etcd: up to the end of the keyspace
    return stripped[:-1] + bytes([stripped[-1] + 1])



def _keepalive(sock: socket.socket) -> None:
    """Let the kernel notice within about 30 s a peer that vanished silently."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class _Http:
    """Thread-safe pooled keep-alive HTTP to the gateway of one of ``hosts``.

    ``timeout`` is the per-call bound: every call (and every stream opened
    from a caller's thread) ends within :func:`moot.deadline.remaining` of it.
    """

    def __init__(self, url: BackendURL, context: ssl.SSLContext | None, timeout: float):
        self._url = url
        self._hosts = [url.host_port(2379, i) for i in range(max(1, len(url.hosts)))]
        self._current = 0
        self.timeout = timeout
        self._context = context
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._token: str | None = None
        self.api = "/v3/"

    def where(self) -> str:
        return self._url.redacted()

    def _address(self) -> tuple[str, int]:
        return self._hosts[self._current % len(self._hosts)]

    def failed(self, address: tuple[str, int] | None) -> None:
        """``address`` failed: the next calls go to the next host."""
        with self._lock:
            if address == self._address():
                self._current += 1

    def span(self) -> tuple[float, float]:
        """(now, the instant this call must end by): the caller's deadline
        cut to the per-call bound. Raises ConnectionLost if it has passed."""
        now = time.monotonic()
        return now, now + deadline.remaining(self.timeout)

    def left(self, started: float, end: float, what: str = "answer") -> float:
        """Seconds left until ``end``; ConnectionLost stating the elapsed time if none."""
        now = time.monotonic()
        if now >= end:
            raise ConnectionLost(f"etcd at {self.where()} did not {what} within {now - started:.1f} s")
        return end - now

    def lost(self, exc: BaseException, started: float) -> MootError:
        """The error to raise for the network failure ``exc``."""
        failure = handshake_failure(exc, self.where())
        if failure is not None:
            return failure
        elapsed = time.monotonic() - started
        if isinstance(exc, TimeoutError):
            return ConnectionLost(f"etcd at {self.where()} did not answer within {elapsed:.1f} s")
        if isinstance(exc, ConnectionRefusedError):
            return ConnectionLost(f"etcd at {self.where()} refused the connection (after {elapsed:.1f} s)")
        reason = str(exc) or type(exc).__name__
        return ConnectionLost(f"etcd at {self.where()} is unreachable (after {elapsed:.1f} s): {reason}")

    def _connection(self, started: float, end: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection the server has not closed, else a new one,
        connected to the first host that accepts (tried in turn, the next one
        at once if a host refuses), within ``end``."""
        with self._lock:
            idle = []
            while self._idle:
                conn = self._idle.pop()
                if conn.sock is not None and not readable(conn.sock):
                    break
                idle.append(conn)
            else:
                conn = None
        for stale in idle:
            stale.close()
        if conn is not None:
            return conn, True
        error: BaseException | None = None
        for tried in range(len(self._hosts)):
            left = self.left(started, end, "accept a connection")
            host, port = address = self._address()
            # Leave time for the other hosts when one does not answer at all.
            bound = min(left, max(_ATTEMPT, left / (len(self._hosts) - tried)))
            if self._context is None:
                conn = http.client.HTTPConnection(host, port, timeout=bound)
            else:
                conn = http.client.HTTPSConnection(host, port, timeout=bound, context=self._context)
            try:
                conn.connect()
                return conn, False
            except _NETWORK_ERRORS as exc:
                conn.close()
                self.failed(address)
                error = exc
        assert error is not None
        raise self.lost(error, started) from None

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = self._token
        return headers

    def call(self, path: str, body: _Json | None = None, *, idempotent: bool = False) -> _Json:
        """POST ``body`` to ``api + path`` (GET ``path`` if no body); the decoded
        answer, or ConnectionLost / SessionExpired (lease not found) / BackendError,
        within the deadline (see docs/design/etcd.md).

        A request is sent again after a transport error or no answer within
        its attempt's bound (to the next host), or while the cluster elects a
        leader, only if it is ``idempotent`` or certainly not applied (no
        leader): a write whose answer was lost raises ConnectionLost. An
        answer to a resent request carries ``_RESENT``."""
        started, end = self.span()
        with deadline.bounded(end):  # also for a nested authenticate()
            return self._call(path, body, idempotent, started, end)

    def _call(self, path: str, body: _Json | None, idempotent: bool, started: float, end: float) -> _Json:
        failures = 0
        authenticated = False
        resent = False
        pause = 0.02
        attempt = _ATTEMPT
        while True:
            conn, reused = self._connection(started, end)
            left = self.left(started, end)
            bound = min(left, attempt) if idempotent else left
            try:
                assert conn.sock is not None
                conn.sock.settimeout(bound)
                if body is None:
                    conn.request("GET", path, headers=self.headers())
                else:
                    conn.request("POST", self.api + path, json.dumps(body), self.headers())
                resp = conn.getresponse()
                payload = resp.read()
            except _NETWORK_ERRORS as exc:
                conn.close()
                timed_out = isinstance(exc, TimeoutError)
                if timed_out or not reused:
                    self.failed((conn.host, conn.port))
                if not reused:
                    failures += 1
                if idempotent and (timed_out or failures <= len(self._hosts)) and time.monotonic() < end:
                    resent = True
                    if timed_out:
                        attempt *= 2  # a slow engine: do not flood it
                    continue
                raise self.lost(exc, started) from None
            with self._lock:
                self._idle.append(conn)
            try:
                answer = json.loads(payload.split(b"\n", 1)[0]) if payload.strip() else {}
            except ValueError:
                raise BackendError(f"etcd at {self.where()} answered {resp.status} with no JSON") from None
            if not isinstance(answer, dict):
                raise BackendError(f"etcd at {self.where()} answered {resp.status} with {type(answer).__name__}")
            if resp.status == 200:
                result: _Json = answer.get("result", answer) if path.endswith("keepalive") else answer
                if resent:
                    result[_RESENT] = True
                return result
            code, message = answer.get("code"), answer.get("error") or answer.get("message") or resp.reason
            if code == _UNAUTHENTICATED and self._url.password is not None and not authenticated:
                self.authenticate()  # the token expired
                authenticated = True
                continue
            if code in _UNAVAILABLE_CODES:
                unapplied = "no leader" in str(message)
                if (idempotent or unapplied) and time.monotonic() + pause < end:
                    self.failed((conn.host, conn.port))  # a member cut off from the others: try another
                    time.sleep(pause)  # a leader election takes about one election timeout
                    pause = min(2 * pause, 0.5)
                    resent = resent or not unapplied
                    continue
                elapsed = time.monotonic() - started
                raise ConnectionLost(f"etcd at {self.where()} cannot serve now (after {elapsed:.1f} s): {message}")
            if code == _UNAUTHENTICATED:  # no credentials given, or refused again after a fresh token
                raise AuthenticationFailed(f"etcd at {self.where()} refused the request as unauthenticated: "
                                           f"{message}; {_FIX_CREDENTIALS}")
            if code == _PERMISSION_DENIED:
                root = self._url.path.strip("/")
                raise PermissionDenied(f"etcd at {self.where()} refused user {self._url.username or ''!r} {path} "
                                       f"under the key prefix {root + '/' if root else ''!r}: {message}; grant its "
                                       f"role readwrite --prefix {root}/ (docs/security.md), or use the root it "
                                       "was given (the URL's path)")
            if code == 5 and "lease not found" in str(message):
                raise SessionExpired("the etcd lease of the session is gone (expired or revoked)")
            raise BackendError(f"etcd at {self.where()} refused {path}: {message} (HTTP {resp.status})")

    def authenticate(self) -> None:
        """Get a fresh auth token for the URL's user (if it has a password)."""
        if self._url.password is None:
            return
        self._token = None
        credentials = {"name": self._url.username or "", "password": self._url.password}
        try:
            answer = self.call("auth/authenticate", credentials, idempotent=True)
        except ConnectionLost:
            raise
        except BackendError as exc:
            raise AuthenticationFailed(f"etcd at {self.where()} refused the credentials of user "
                                       f"{self._url.username or ''!r}: {exc}; {_FIX_CREDENTIALS}") from None
        self._token = answer["token"]

    def open_stream(self, path: str, body: _Json | None, started: float, end: float, *,
                    websocket_key: str | None = None) -> tuple[socket.socket, tuple[str, int]]:
        """A socket on which ``body`` was POSTed to ``api + path`` (a stream),
        or with ``websocket_key`` an upgrade to a WebSocket was asked for,
        on the first host that accepts within ``end``."""
        data = b"" if body is None else json.dumps(body).encode()
        error: BaseException | None = None
        for tried in range(len(self._hosts)):
            left = self.left(started, end, "accept a connection")
            host, port = self._address()
            if websocket_key is None:
                head = [f"POST {self.api}{path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(data)}"]
            else:
                head = [f"GET {self.api}{path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                        "Connection: Upgrade", f"Sec-WebSocket-Key: {websocket_key}", "Sec-WebSocket-Version: 13"]
            head += [f"{name}: {value}" for name, value in self.headers().items()]
            bound = min(left, max(_ATTEMPT, left / (len(self._hosts) - tried)))
            sock: socket.socket | None = None
            try:
                sock = socket.create_connection((host, port), timeout=bound)
                _keepalive(sock)
                if self._context is not None:
                    sock = self._context.wrap_socket(sock, server_hostname=host)
                sock.settimeout(self.left(started, end))
                sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + data)
                return sock, (host, port)
            except _NETWORK_ERRORS as exc:
                if sock is not None:
                    sock.close()
                self.failed((host, port))
                error = exc
        assert error is not None
        raise self.lost(error, started) from None

    def watch_refused(self, reason: str) -> MootError:
        """The error of a watch etcd would not create (its ``cancel_reason``)."""
        if "permission denied" in reason:  # the range is not the user's
            return PermissionDenied(f"etcd at {self.where()} refused a watch outside the user's key range: "
                                    f"{reason}; use the root it was given (docs/security.md)")
        return ConnectionLost(f"etcd at {self.where()} refused a watch: {reason}")

    def open_watch(self, open_once: Callable[[float, float, float], _T], close: Callable[[], None],
                   peer: Callable[[], tuple[str, int] | None]) -> _T:
        """Open a watch stream with ``open_once(started, end, attempt)``, which
        returns once etcd confirmed its watches, raises TimeoutError when no
        confirmation came within ``attempt`` seconds, or _StreamLost. Within
        the caller's deadline: an unconfirmed attempt is tried again on the
        next host with twice the time (1 s, 2 s, ...); an expired token is
        renewed once. ``close`` runs after every failed attempt; ``peer`` is
        the address the attempt used. Raises ConnectionLost, or
        PermissionDenied for a watch outside the user's key range."""
        started, end = self.span()
        attempt = _ATTEMPT
        authenticated = False
        with deadline.bounded(end):
            while True:
                try:
                    return open_once(started, end, attempt)
                except TimeoutError as exc:
                    address = peer()
                    close()
                    if time.monotonic() >= end:
                        raise self.lost(exc, started) from None
                    self.failed(address)
                    attempt *= 2
                except _StreamLost as exc:
                    close()
                    if "Unauthenticated" in str(exc) and not authenticated:
                        self.authenticate()  # the token expired: once more with a new one
                        authenticated = True
                        continue
                    if "permission denied" in str(exc):
                        raise self.watch_refused(str(exc)) from None
                    elapsed = time.monotonic() - started
                    raise ConnectionLost(f"cannot watch on etcd at {self.where()} (after {elapsed:.1f} s): "
                                         f"{exc}") from None
                except _NETWORK_ERRORS as exc:
                    close()
                    raise self.lost(exc, started) from None
                except BaseException:
                    close()
                    raise

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def forget(self) -> None:
        """In a forked child: close the pooled sockets (plain close; no lock
        taken, since another thread of the parent may have held it)."""
        idle, self._idle = self._idle, []
        self._lock = threading.Lock()
        for conn in idle:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.close()


class _StreamLost(Exception):
    """A stream ended or answered something other than what was asked."""


class _ChunkedLines:
    """Incremental decoder of a streamed HTTP/1.1 answer (status 200, chunked
    body of newline-separated JSON values, as the gateway's watch sends)."""

    def __init__(self) -> None:
        self._raw = bytearray()
        self._body = bytearray()
        self._in_body = False

    def feed(self, data: bytes) -> list[object]:
        """The JSON values completed by ``data``; raises _StreamLost if the
        status is not 200, the framing is broken or the stream is over."""
        self._raw += data
        if not self._in_body:
            end = self._raw.find(b"\r\n\r\n")
            if end < 0:
                return []
            status = bytes(self._raw[: self._raw.find(b"\r\n")]).decode("latin-1")
            if status.split(" ")[1:2] != ["200"]:
                raise _StreamLost(status)
            del self._raw[: end + 4]
            self._in_body = True
        while (eol := self._raw.find(b"\r\n")) >= 0:
            try:
                size = int(bytes(self._raw[:eol]).split(b";")[0], 16)
            except ValueError:
                raise _StreamLost(f"a malformed chunk header: {bytes(self._raw[:eol])[:40]!r}") from None
            if size == 0:
                raise _StreamLost("the server ended the watch stream")
            if len(self._raw) < eol + size + 4:
                break
            self._body += self._raw[eol + 2 : eol + 2 + size]
            del self._raw[: eol + size + 4]
        values: list[object] = []
        while (eol := self._body.find(b"\n")) >= 0:
            line = bytes(self._body[:eol])
            del self._body[: eol + 1]
            if not line.strip():
                continue
            try:
                values.append(json.loads(line))
            except ValueError:
                raise _StreamLost(f"not JSON: {line[:80]!r}") from None
        return values
