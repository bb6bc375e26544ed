"""The Coordinator: one session with a backend, kept alive by a heartbeat
thread, and the factory of every recipe (locks, groups, elections).

Guarantees:

* ``connect()`` returns only once the backend answered and a session is open.
* The heartbeat runs in a real OS thread (never a green thread), every
  ``heartbeat`` seconds (default ``ttl / 3``).
* When the session ends (expired, evicted, or unreachable for a whole TTL),
  every lock and leadership held through it is reported lost (callbacks run,
  ``is_held`` turns False) *before* anybody else can have taken it over,
  then a new session is opened and joined groups are joined again.
* ``close()`` releases held locks, leaves joined groups, ends the session and
  stops the heartbeat; it never raises for state that is already gone.
"""

from __future__ import annotations

import dataclasses
import getpass
import importlib
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from moot import names
from moot.backends.base import Backend, Dispatcher, Entry
from moot.errors import (
    ConnectionLost,
    CoordinatorClosed,
    DriverNotInstalled,
    InvalidArgument,
    InvalidURL,
    MootError,
    SessionExpired,
)
from moot.stats import Stats
from moot.url import BACKENDS, BackendURL, option_float, parse_url

if TYPE_CHECKING:
    from moot.recipes.election import Election
    from moot.recipes.group import Group
    from moot.recipes.lock import Lock, LockInfo
    from moot.recipes.partitioner import Partitioner
    from moot.recipes.rwlock import RWLock
    from moot.recipes.semaphore import Semaphore, SemaphoreInfo

log = logging.getLogger("moot.coordinator")

DEFAULT_TTL = 10.0
DEFAULT_TIMEOUT = 10.0
CORE_OPTIONS = frozenset(
    {"ttl", "namespace", "timeout", "heartbeat", "initial_reconnect_backoff", "max_reconnect_backoff"}
)


class SessionBound(Protocol):
    """What the coordinator tells about session changes (held locks, joined groups)."""

    def _session_lost(self) -> None: ...

    def _session_renewed(self) -> None: ...

    def _close(self) -> None: ...


def default_url() -> str:
    """``$MOOT_URL`` if set, else a file:// directory private to this user."""
    if os.environ.get("MOOT_URL"):
        return os.environ["MOOT_URL"]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return f"file://{os.path.join(base, f'moot-{getpass.getuser()}')}"


def default_member_id() -> str:
    """Unique per process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _load_backend(url: BackendURL, options: dict[str, Any]) -> Backend:
    module_name, class_name, extra, client = BACKENDS[url.scheme]
    if client is not None:
        try:
            importlib.import_module(client)
        except ImportError:
            raise DriverNotInstalled(
                f"the {url.scheme}:// backend needs the {client!r} package: pip install 'moot[{extra}]'"
            ) from None
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    unknown = set(options) - CORE_OPTIONS - cls.OPTIONS
    if unknown:
        known = ", ".join(sorted(CORE_OPTIONS | cls.OPTIONS))
        raise InvalidURL(f"unknown option(s) {', '.join(sorted(unknown))} for {url.scheme}://; known: {known}")
    return cls(url, options)


def connect(url: str | None = None, member_id: str | None = None, **options: Any) -> Coordinator:
    """Open a session with the backend named by ``url`` and start its heartbeat.

    ``url`` defaults to ``$MOOT_URL``, else a file:// directory in the user's
    runtime or temporary directory. Options come from the URL's query string
    and from keywords (keywords win): ``ttl`` (seconds, default 10),
    ``namespace`` (default ``"default"``), ``timeout`` (connect, default 10),
    ``heartbeat`` (default ttl/3), ``initial_reconnect_backoff`` and
    ``max_reconnect_backoff`` (seconds).
    """
    parsed = parse_url(default_url() if url is None else url)
    merged: dict[str, Any] = dict(parsed.query)
    merged.update(options)
    coordinator = Coordinator(parsed, member_id, merged)
    coordinator._start()
    return coordinator


class Coordinator:
    """A session with a coordination backend; see the module docstring."""

    def __init__(self, url: BackendURL, member_id: str | None, options: dict[str, Any]):
        self.url = url.redacted()
        self.member_id = names.check_name(member_id if member_id is not None else default_member_id(),
                                          "member_id")
        self.ttl = option_float(options, "ttl", DEFAULT_TTL)
        self.timeout = option_float(options, "timeout", DEFAULT_TIMEOUT)
        self.heartbeat_interval = option_float(options, "heartbeat", self.ttl / 3)
        if self.heartbeat_interval >= self.ttl:
            raise InvalidURL(f"heartbeat={self.heartbeat_interval:g} must be shorter than ttl={self.ttl:g}")
        self.initial_reconnect_backoff = option_float(options, "initial_reconnect_backoff", 0.1)
        self.max_reconnect_backoff = option_float(options, "max_reconnect_backoff", max(1.0, self.ttl / 3))
        self.namespace = names.check_name(str(options.get("namespace", "default")), "namespace")
        self._prefix = names.segment(self.namespace) + "/"
        self.backend = _load_backend(url, options)
        self.session_id: str | None = None
        self._bound: set[SessionBound] = set()
        self._bound_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by close() and by the backend's session listener
        self._session_ok = threading.Event()
        self._session_lock = threading.Lock()
        self._last_ok = time.monotonic()
        self._undeleted: set[str | _Unanswered] = set()
        self.metrics = Stats()
        self.callbacks: Dispatcher | None = None
        self._heartbeat: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<moot.Coordinator {self.url} member_id={self.member_id!r} {state}>"

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle --------------------------------------------------------
    def _start(self) -> None:
        try:
            self.backend.connect(self.timeout)
            self.backend.set_session_listener(self._on_backend_session_end)
            self._last_ok = time.monotonic()
            self.session_id = self.backend.open_session(self.ttl)
        except MootError:
            self.backend.close()
            raise
        except Exception as exc:  # a client library's own error: name it, hide secrets
            self.backend.close()
            raise ConnectionLost(f"cannot connect to {self.url}: {type(exc).__name__}") from None
        self._session_ok.set()
        self.callbacks = Dispatcher("moot-callbacks")
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="moot-heartbeat", daemon=True)
        self._heartbeat.start()
        self._watchdog = threading.Thread(target=self._watchdog_loop, name="moot-watchdog", daemon=True)
        self._watchdog.start()

    def close(self) -> None:
        """Release held locks, leave joined groups, end the session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        for thread in (self._heartbeat, self._watchdog):
            if thread is not None and thread is not threading.current_thread():
                thread.join()
        with self._bound_lock:
            bound = list(self._bound)
        for item in bound:
            try:
                item._close()
            except Exception:
                log.debug("error while closing %r", item, exc_info=True)
        try:
            self.backend.close()
        finally:
            if self.callbacks is not None:
                self.callbacks.close()

    def stats(self) -> dict[str, Any]:
        """This coordinator's figures so far: counters (acquisitions, timeouts,
        lost locks, reconnects, heartbeats...) and histograms (lock wait and
        hold time, heartbeat latency and lateness), by recipe kind."""
        return self.metrics.snapshot()

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise CoordinatorClosed(f"{self!r} is closed; open a new one with moot.connect()")

    # -- session ----------------------------------------------------------
    def bind(self, item: SessionBound) -> None:
        """Tell ``item`` when the session is lost or renewed, until unbound."""
        with self._bound_lock:
            self._bound.add(item)

    def unbind(self, item: SessionBound) -> None:
        with self._bound_lock:
            self._bound.discard(item)

    def wait_for_session(self, deadline: float | None) -> bool:
        """Block until a live session exists (after a loss); False on deadline."""
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._session_ok.wait(remaining)

    def _on_backend_session_end(self) -> None:
        # Only a hint to refresh now: the report may concern a session that is
        # already replaced, so the refresh decides whether this one ended.
        self._wake.set()

    def _heartbeat_loop(self) -> None:
        backoff = self.initial_reconnect_backoff
        wait = self.heartbeat_interval
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                if self._session_ok.is_set():
                    self.backend.refresh_session()
                else:
                    self._open_new_session()
                if self._undeleted:
                    self._retry_deletes()
                late = max(0.0, started - self._last_ok - self.heartbeat_interval)
                if late > self.ttl / 3:
                    log.warning("moot: heartbeat ran %.2fs late (ttl %.1fs) on %s", late, self.ttl, self.url)
                self.metrics.timed("heartbeats", "heartbeat_seconds", "coordinator", time.monotonic() - started)
                self.metrics.observe("heartbeat_lateness_seconds", "coordinator", late)
                self._last_ok = started
                backoff = self.initial_reconnect_backoff
                wait = self.heartbeat_interval
            except SessionExpired:
                self._declare_lost("the session expired")
                wait = 0.0
            except Exception as exc:  # ConnectionLost or a client library error
                self.metrics.count("heartbeat_failures")
                log.warning("moot: heartbeat to %s failed (%s); retrying in %.2fs", self.url,
                            type(exc).__name__, backoff)
                wait = backoff
                backoff = min(backoff * 2, self.max_reconnect_backoff)

    def _open_new_session(self) -> None:
        try:
            self.backend.close_session()  # whatever is left of the old one
        except Exception:
            log.debug("closing the old session failed", exc_info=True)
        self.session_id = self.backend.open_session(self.ttl)
        self.metrics.count("reconnects")
        log.warning("moot: new session opened on %s for %s", self.url, self.member_id)
        self._session_ok.set()
        self._renew_bound()

    def _watchdog_loop(self) -> None:
        """Declare the session lost once a whole TTL passed without a
        successful renewal, even while a renewal call is still hanging: by
        then the engine may hand our locks to others, so holders must know."""
        while True:
            if self._session_ok.is_set():
                remaining = self._last_ok + self.ttl - time.monotonic()
                if remaining <= 0:
                    self._declare_lost("no successful heartbeat for a whole TTL")
                    self._wake.set()
                    remaining = self.heartbeat_interval
            else:
                remaining = self.heartbeat_interval
            if self._stop.wait(remaining):
                return

    def _declare_lost(self, why: str) -> None:
        """Tell every holder its locks are gone (once per session)."""
        with self._session_lock:
            if not self._session_ok.is_set():
                return
            self._session_ok.clear()
        self.metrics.count("sessions_lost")
        with self._bound_lock:
            self._undeleted.clear()  # ephemeral: they ended with the session
            bound = list(self._bound)
        log.warning("moot: session of %s on %s lost: %s; its locks are lost", self.member_id, self.url, why)
        for item in bound:
            try:
                item._session_lost()
            except Exception:
                log.exception("moot: error while reporting a lost session to %r", item)

    def _renew_bound(self) -> None:
        with self._bound_lock:
            bound = list(self._bound)
        for item in bound:
            try:
                item._session_renewed()
            except Exception:
                log.exception("moot: error while renewing %r on a new session", item)

    def delete_entry(self, key: str) -> bool:
        """Delete an ephemeral entry of this session (a released lock, a left
        queue). If the backend cannot be reached now, the heartbeat deletes it
        as soon as it can, so a live session never keeps a stale entry; the
        ConnectionLost is raised all the same, for the caller to report."""
        try:
            return self.backend.delete(key)
        except SessionExpired:
            return False
        except ConnectionLost:
            with self._bound_lock:
                self._undeleted.add(key)
            raise

    def enqueue(self, prefix: str, value: bytes) -> tuple[Entry, list[Entry]]:
        """``backend.enqueue``; if its answer is lost, the entry it may have
        made is found (by session and value) and deleted by the heartbeat."""
        try:
            return self.backend.enqueue(prefix, value)
        except ConnectionLost:
            with self._bound_lock:
                self._undeleted.add(_Unanswered(prefix, value))
            raise

    def _retry_deletes(self) -> None:
        with self._bound_lock:
            pending, self._undeleted = self._undeleted, set()
        for item in pending:
            try:
                if isinstance(item, _Unanswered):
                    for entry in self.backend.list(item.prefix):
                        if entry.owner == self.session_id and entry.value == item.value:
                            self.backend.delete(entry.key)
                else:
                    self.backend.delete(item)
            except SessionExpired:
                pass
            except ConnectionLost:
                with self._bound_lock:
                    self._undeleted.add(item)

    def run_callback(self, fn: Callable[[], None]) -> None:
        """Run a user callback on the coordinator's callback thread."""
        if self.callbacks is not None:
            self.callbacks.submit(self._guarded(fn))

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn``, run again a little later if the backend could not be reached."""

        def run() -> None:
            if self._closed:
                return
            try:
                fn()
            except ConnectionLost:
                timer = threading.Timer(self.initial_reconnect_backoff, self.run_callback, (fn,))
                timer.daemon = True
                timer.start()

        return run

    # -- keys -------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """A backend key in this coordinator's namespace (parts already escaped)."""
        return self._prefix + "/".join(parts)

    # -- recipes ----------------------------------------------------------
    def lock(self, name: str, timeout: float | None = None,
             on_lost: Callable[[Lock], None] | None = None) -> Lock:
        """An exclusive, FIFO, fenced lock named ``name`` (not yet acquired).

        ``timeout`` is the default for ``acquire()`` and for ``with``."""
        from moot.recipes.lock import Lock

        return Lock(self, name, timeout=timeout, on_lost=on_lost)

    def lock_info(self, name: str) -> LockInfo | None:
        """Who holds lock ``name`` (member, token, since) and who waits, in
        order; None if nobody holds or waits for it."""
        from moot.recipes.lock import lock_info

        return lock_info(self, name)

    def locks(self) -> list[LockInfo]:
        """Every lock that is held or waited for in this namespace."""
        from moot.recipes.lock import all_locks

        return all_locks(self)

    def group(self, name: str, member_id: str | None = None) -> Group:
        """The group ``name`` (created by the first ``join()``), joined as
        ``member_id`` (default: this coordinator's)."""
        from moot.recipes.group import Group

        return Group(self, name, member_id)

    def groups(self) -> list[str]:
        """Names of every group in this namespace."""
        from moot.recipes.group import all_groups

        return all_groups(self)

    def election(self, name: str) -> Election:
        """The leader election ``name``."""
        from moot.recipes.election import Election

        return Election(self, name)

    def rwlock(self, name: str, timeout: float | None = None,
               on_lost: Callable[[RWLock], None] | None = None) -> RWLock:
        """A shared/exclusive lock named ``name`` (``.read()``, ``.write()``,
        ``upgrade()``); it shares its queue with ``lock(name)``."""
        from moot.recipes.rwlock import RWLock

        return RWLock(self, name, timeout=timeout, on_lost=on_lost)

    def semaphore(self, name: str, limit: int, timeout: float | None = None,
                  on_lost: Callable[[Semaphore], None] | None = None) -> Semaphore:
        """A counting semaphore: at most ``limit`` holders of ``name`` at once."""
        from moot.recipes.semaphore import Semaphore

        return Semaphore(self, name, limit, timeout=timeout, on_lost=on_lost)

    def semaphores(self) -> list[SemaphoreInfo]:
        """Every semaphore in use in this namespace, with holders and waiters."""
        from moot.recipes.semaphore import semaphores

        return semaphores(self)

    def partitioner(self, group_name: str, replicas: int = 1) -> Partitioner:
        """A consistent hash ring over the live members of ``group_name``."""
        from moot.recipes.partitioner import Partitioner

        return Partitioner(self, group_name, replicas=replicas)


@dataclasses.dataclass(frozen=True)
class _Unanswered:
    """An enqueue whose answer was lost: its entry may exist."""

    prefix: str
    value: bytes


def check_timeout(timeout: float | None) -> float | None:
    """Validate a user timeout (None = forever); returns the monotonic deadline."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout != timeout:
        raise InvalidArgument(f"timeout must be a number of seconds or None, not {timeout!r}")
    if timeout < 0:
        raise InvalidArgument(f"timeout must not be negative (got {timeout}); use None to wait forever")
    return time.monotonic() + timeout
