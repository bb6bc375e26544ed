"""A fenced register: a tiny server (Unix socket, one line per request) that
accepts a write only if its token is at least the highest token it accepted,
and records every attempt.

Protocol: the client sends ``W <pid> <token> <checked_at>\\n`` (``checked_at``
is the ``time.monotonic()`` instant at which the writer saw ``is_held``
True); the server answers ``A\\n`` (accepted) or ``R <highest>\\n``
(rejected). ``time.monotonic()`` is CLOCK_MONOTONIC, one clock for every
process of the machine, so times from writers and server compare.

A token equal to the highest accepted one is accepted (one holder writes
several times with its token); the history checks flag an equal token
accepted from another process, which is a reused token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import socketserver
import threading
import time


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One write as the register saw it."""

    pid: int
    token: int
    checked_at: float  # when the writer saw is_held True (its clock = ours)
    received_at: float  # when the register decided
    accepted: bool
    highest_before: int  # highest token accepted before this attempt (-1: none)


class FencedRegister:
    """The server, run on threads of the test process."""

    def __init__(self, path: str):
        self.path = path
        self.attempts: list[Attempt] = []
        self._highest = -1
        self._mutex = threading.Lock()
        register = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    kind, pid, token, checked = line.decode().split()
                    assert kind == "W", line
                    answer = register._write(int(pid), int(token), float(checked))
                    self.wfile.write(answer.encode())
                    self.wfile.flush()

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._server = Server(path, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fenced-register", daemon=True)
        self._thread.start()

    def _write(self, pid: int, token: int, checked_at: float) -> str:
        with self._mutex:
            before = self._highest
            accepted = token >= before
            if accepted:
                self._highest = token
            self.attempts.append(Attempt(pid, token, checked_at, time.monotonic(), accepted, before))
        return "A\n" if accepted else f"R {before}\n"

    def snapshot(self) -> list[Attempt]:
        with self._mutex:
            return list(self.attempts)

    def last_writer(self) -> int | None:
        """PID of the last accepted write, if any."""
        with self._mutex:
            for attempt in reversed(self.attempts):
                if attempt.accepted:
                    return attempt.pid
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class RegisterClient:
    """One writer's connection (used by the worker processes)."""

    def __init__(self, path: str):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._file = self._sock.makefile("rwb")

    def write(self, token: int, checked_at: float) -> bool:
        """Send one write; True if the register accepted it."""
        self._file.write(f"W {os.getpid()} {token} {checked_at:.6f}\n".encode())
        self._file.flush()
        answer = self._file.readline()
        if not answer:
            raise ConnectionError("the fenced register closed the connection")
        return answer.startswith(b"A")
