"""kazoo on real OS threads, also under ``eventlet.monkey_patch()``: a kazoo
handler made only of what the OS provides, and waits that never block
eventlet's hub when a green thread makes them. The handler also makes the
TLS connections, with moot's own SSL context (see _support/tls.py)."""

from __future__ import annotations

import collections
import importlib
import math
import ssl
import time
from collections.abc import Callable
from typing import Any

from kazoo.handlers import utils as kazoo_utils
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler

from moot.realthreads import FIRST_PAUSE, LONGEST_PAUSE, green, original, select, threading
from moot.realthreads import green_caller as _green_caller

_real_socket = original("socket")
_real_time = original("time")


def _current() -> object:
    """Who runs this code: the green thread under eventlet, else the OS thread."""
    if green():
        greenlet = importlib.import_module("greenlet")
        return greenlet.getcurrent()
    return threading.get_ident()


class _SessionLock:
    """A reentrant lock held across round trips (connection and session
    changes), by real and green threads alike. Its owner is the current green
    thread under eventlet: a real ``RLock`` would let every green thread of
    one OS thread in at once. A green thread waits for it without blocking
    eventlet's hub."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: object | None = None
        self._depth = 0

    def acquire(self, timeout: float) -> bool:
        me = _current()
        green = _green_caller()
        until = time.monotonic() + timeout
        pause = FIRST_PAUSE
        with self._cond:
            while self._owner is not None and self._owner != me:
                left = until - time.monotonic()
                if left <= 0:
                    return False
                if not green:
                    self._cond.wait(left)
                    continue
                self._cond.release()  # never held while this green thread yields
                try:
                    time.sleep(min(pause, left))
                finally:
                    self._cond.acquire()
                pause = min(pause * 2, LONGEST_PAUSE)
            self._owner = me
            self._depth += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify()


class _RealQueue:
    """kazoo's callback queue on a real lock (``queue.Queue`` is green under eventlet)."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def get(self) -> Any:
        with self._ready:
            while not self._items:
                self._ready.wait()
            return self._items.popleft()

    def task_done(self) -> None:
        pass


class _RealHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler made only of what the OS provides: real
    threads, locks, events, queues and result conditions, the real socket
    module and ``poll``, and the real ``time.sleep``, even in a process that
    eventlet has monkey-patched (see "Green threads" in docs/design/zookeeper.md)."""

    name = "moot_real_threads"
    queue_impl = _RealQueue
    sleep_func = staticmethod(_real_time.sleep)

    def __init__(self, tls: ssl.SSLContext | None = None, handshake_timeout: float | None = None) -> None:
        super().__init__()
        self._state_change = threading.Lock()  # kazoo made it from its (maybe green) threading
        self._tls = tls
        self._handshake_timeout = handshake_timeout

    def select(self, rlist: list[Any], wlist: list[Any], xlist: list[Any],
               timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
        # A TLS socket may hold decrypted bytes that poll() cannot see (kazoo
        # reads one reply at a time): such a socket is readable now.
        if any(getattr(obj, "pending", None) and obj.pending() for obj in rlist):
            timeout = 0
        poller = select.poll()
        masks: dict[int, int] = {}
        for objects, mask in ((rlist, select.POLLIN), (wlist, select.POLLOUT)):
            for obj in objects:
                fd = kazoo_utils.fileobj_to_fd(obj)
                masks[fd] = masks.get(fd, 0) | mask
        for fd, mask in masks.items():
            poller.register(fd, mask)
        events = dict(poller.poll(None if timeout is None else math.ceil(max(0.0, timeout) * 1000)))
        failed = select.POLLERR | select.POLLHUP | select.POLLNVAL  # the next recv/send reports it
        readable = [obj for obj in rlist
                    if events.get(kazoo_utils.fileobj_to_fd(obj), 0) & (select.POLLIN | failed)
                    or (getattr(obj, "pending", None) and obj.pending())]
        writable = [obj for obj in wlist
                    if events.get(kazoo_utils.fileobj_to_fd(obj), 0) & (select.POLLOUT | failed)]
        return readable, writable, []

    def socket(self) -> Any:
        return kazoo_utils.create_tcp_socket(_real_socket)

    def create_connection(self, address: tuple[str, int], hostname: str | None = None,
                          timeout: float | None = None, **ignored: Any) -> Any:
        """A TCP connection to ``address``, over TLS when the backend asked
        for it: the handshake, with the backend's SSL context, checks the
        certificate against ``hostname`` (the host as the URL names it).
        kazoo's own TLS options are ignored: moot's context decides."""
        sock = kazoo_utils.create_tcp_connection(_real_socket, address, timeout=timeout)
        if self._tls is None:
            return sock
        try:
            if self._handshake_timeout is not None and timeout is not None:
                sock.settimeout(min(timeout, self._handshake_timeout))
            return self._tls.wrap_socket(sock, server_hostname=hostname)  # the handshake, now
        except BaseException:
            sock.close()
            raise

    def create_socket_pair(self) -> Any:
        return kazoo_utils.create_socket_pair(_real_socket)

    def event_object(self) -> threading.Event:
        return threading.Event()

    def lock_object(self) -> Any:
        return threading.Lock()

    def rlock_object(self) -> Any:
        return threading.RLock()

    def async_result(self) -> Any:
        return kazoo_utils.AsyncResult(self, threading.Condition, KazooTimeoutError)

    def spawn(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> threading.Thread:
        thread = threading.Thread(target=func, args=args, kwargs=kwargs, daemon=True)
        thread.start()
        return thread

