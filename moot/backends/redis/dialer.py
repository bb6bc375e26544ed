"""How moot reaches a Redis server: the address (the primary a Sentinel
names, for redis+sentinel://) and new connections with their TLS, AUTH and
setup handshake."""

from __future__ import annotations

import builtins
import socket
import ssl
import time

from moot.backends._support.tls import closed_after_handshake, handshake_failure
from moot.backends.redis.resp import _AuthFailed, _exchange, _left, _pack, _RespError
from moot.deadline import remaining


def _is_auth_error(reply: _RespError) -> bool:
    """An error reply saying the connection is not (or wrongly) authenticated."""
    return str(reply).startswith(("NOAUTH", "WRONGPASS"))


class Dialer:
    """Opens the backend's connections: commands, pub/sub, and the Sentinels'.

    ``connect_timeout`` bounds a new connection's handshake (the backend sets
    it to its connect() timeout); ``socket_timeout`` is left on the socket."""

    def __init__(self, address: tuple[str, int], db: int, tls: ssl.SSLContext | None, username: str | None,
                 password: str | None, socket_timeout: float, service: str | None = None,
                 sentinels: builtins.list[tuple[str, int]] | None = None, sentinel_password: str | None = None):
        self._host, self._port = address
        self._db = db
        self._tls = tls
        self._username, self._password = username, password
        self._socket_timeout = socket_timeout
        self.connect_timeout = socket_timeout
        self._service = service
        self._sentinels = sentinels or []
        self._sentinel_password = sentinel_password

    def address(self, until: float) -> tuple[str, int]:
        """Where the server is now: for redis+sentinel://, the primary that the
        first Sentinel which answers names (and does not see down)."""
        if self._service is None:
            return self._host, self._port
        password = self._sentinel_password
        error: Exception = ConnectionRefusedError("no Sentinel answered")
        for host, port in self._sentinels:
            try:
                sock = self.dial(host, port, self._tls, None, None if password is None else str(password), until)
                try:
                    (reply,) = _exchange(sock, _pack(b"SENTINEL", b"MASTER", self._service.encode()), 1, until)
                except OSError as exc:  # the first read on the connection: see _dial
                    raise self._tls_refusal(exc, self._tls, host, port, until) from None
                finally:
                    sock.close()
            except (OSError, _AuthFailed, _RespError, ValueError) as exc:  # ValueError: TLSFailed too
                error = exc
                continue
            if isinstance(reply, _RespError) and _is_auth_error(reply):
                error = _AuthFailed(str(reply))  # the Sentinel wants a password (sentinel_password) we lack
                continue
            if not isinstance(reply, list):
                error = ConnectionRefusedError(f"Sentinel {host}:{port} answered {reply}")
                continue
            fields = dict(zip(reply[::2], reply[1::2], strict=False))
            flags = set(bytes(fields.get(b"flags") or b"").split(b","))
            if b"master" in flags and not flags & {b"s_down", b"o_down", b"disconnected"}:
                return bytes(fields[b"ip"]).decode(), int(fields[b"port"])
            error = ConnectionRefusedError(f"Sentinel {host}:{port} sees the primary of {self._service!r} down")
        if isinstance(error, _AuthFailed):
            raise _AuthFailed(f"a Sentinel refused the credentials (the sentinel_password option): {error}")
        raise error

    def dial(self, host: str, port: int, tls: ssl.SSLContext | None, username: str | None,
              password: str | None, until: float, *setup: builtins.list[bytes]) -> socket.socket:
        """A new connection, with its TLS and AUTH handshake and the ``setup``
        commands (whose error replies are ignored), all within ``until``."""
        sock = socket.create_connection((host, port), timeout=_left(until, self.connect_timeout))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock.settimeout(_left(until))
                try:
                    sock = tls.wrap_socket(sock, server_hostname=host)
                except OSError as exc:
                    raise self._tls_refusal(exc, tls, host, port, until) from None
            commands = list(setup)
            if password is not None:
                commands.insert(0, [b"AUTH", *([username.encode()] if username else []), password.encode()])
            if commands:
                try:
                    replies = _exchange(sock, b"".join(_pack(*c) for c in commands), len(commands), until)
                except OSError as exc:  # a refused client certificate shows at the first read (TLS 1.3)
                    raise self._tls_refusal(exc, tls, host, port, until) from None
                if password is not None and isinstance(replies[0], _RespError):
                    raise _AuthFailed(str(replies[0]))
                for command, reply in zip(commands, replies, strict=True):
                    if isinstance(reply, _RespError) and _is_auth_error(reply):
                        raise _AuthFailed(str(reply))  # the server wants a password the URL lacks
                    if isinstance(reply, _RespError) and command[0] == b"SELECT":
                        raise reply
            sock.settimeout(self._socket_timeout)
            return sock
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _tls_refusal(exc: OSError, tls: ssl.SSLContext | None, host: str, port: int,
                     until: float) -> Exception:
        """TLSFailed if ``exc``, met on a new connection, is a TLS failure a
        retry cannot fix (also one whose alert was lost: see
        :func:`closed_after_handshake`); else ``exc`` itself."""
        if tls is None:
            return exc
        where = f"{host}:{port}"
        return handshake_failure(exc, where) or closed_after_handshake(
            exc, lambda: socket.create_connection((host, port), timeout=_left(until)), tls, host, where) or exc

    def open_command(self, until: float) -> socket.socket:
        """A new command connection (the pool's), within ``until``."""
        until = min(until, time.monotonic() + self.connect_timeout)
        host, port = self.address(until)
        setup = [[b"CLIENT", b"SETNAME", b"moot"]]
        if self._db:
            setup.insert(0, [b"SELECT", b"%d" % self._db])
        return self.dial(host, port, self._tls, self._username, self._password, until, *setup)

    def open_pubsub(self) -> socket.socket:
        """A new authenticated connection for the listener (TLS if rediss://)."""
        until = time.monotonic() + remaining(self.connect_timeout)
        host, port = self.address(until)
        return self.dial(host, port, self._tls, self._username, self._password, until,
                          [b"CLIENT", b"SETNAME", b"moot-watch"])

    def open_sentinel(self) -> socket.socket:
        """A connection to the first Sentinel that answers, to hear of failovers."""
        until = time.monotonic() + remaining(self.connect_timeout)
        password = self._sentinel_password
        error: Exception = ConnectionRefusedError("no Sentinel answered")
        for host, port in self._sentinels:
            try:
                return self.dial(host, port, self._tls, None, None if password is None else str(password), until,
                                  [b"CLIENT", b"SETNAME", b"moot-watch"])
            except (OSError, _AuthFailed) as exc:
                error = exc
        raise error
