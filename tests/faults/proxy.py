"""A TCP proxy run in the test process, to cut one client off its engine.

Each :class:`Proxy` listens on a free port of 127.0.0.1 and forwards every
connection to one upstream address. :meth:`Proxy.partition` makes it
silently stop forwarding, in both directions, on every connection (and not
connect new ones upstream) without closing anything: bytes and closes wait
in the proxy and in kernel buffers, as in a network that drops packets and
TCP keeps retransmitting. :meth:`Proxy.heal` forwards everything held and
resumes. (Unlike a real drop, the proxy's own listener still completes TCP
handshakes during a partition; the connection then carries nothing.)
"""

from __future__ import annotations

import contextlib
import socket
import threading

HOST = "127.0.0.1"


class Proxy:
    def __init__(self, upstream_port: int, upstream_host: str = HOST):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._mutex = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    @property
    def partitioned(self) -> bool:
        return not self._open.is_set()

    def partition(self) -> None:
        """Stop forwarding (silently: nothing is closed)."""
        self._open.clear()

    def heal(self) -> None:
        """Forward what was held and resume."""
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._mutex:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def _track(self, sock: socket.socket) -> bool:
        with self._mutex:
            if self._closed:
                return False
            self._sockets.add(sock)
            return True

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._track(client):
                _shut(client)
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._open.wait()
        try:
            server = socket.create_connection(self.upstream, timeout=5)
            server.settimeout(None)
        except OSError:
            _shut(client)
            return
        if not self._track(server):
            _shut(client)
            _shut(server)
            return
        for src, dst in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self._open.wait()  # a partition holds data and closes alike
                if not data or self._closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._open.wait()
            _shut(src)
            _shut(dst)
            with self._mutex:
                self._sockets.discard(src)
                self._sockets.discard(dst)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
