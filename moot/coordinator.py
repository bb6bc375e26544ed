"""The Coordinator: what ``moot.connect()`` returns, a thin facade over one
:class:`moot.session.Session` that builds the recipes (locks, groups,
elections...) on it. Everything a session guarantees (validity with a safety
margin, holds bound when served, revocation after a loss, deadlines, fork and
garbage-collection safety, real OS threads under eventlet) is stated in
:mod:`moot.session`; recipes take the session and never import this module.
"""

from __future__ import annotations

import importlib
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from moot.backends.base import Backend, Watch
from moot.errors import ConfigurationError, InvalidURL, missing_driver
from moot.recipes.election import Election
from moot.recipes.group import Group, all_groups
from moot.recipes.lock import Lock, LockInfo, all_locks, lock_info, watch_lock
from moot.recipes.partitioner import Partitioner
from moot.recipes.rwlock import RWLock
from moot.recipes.semaphore import Semaphore, SemaphoreInfo, semaphores
from moot.session import DEFAULT_TIMEOUT, DEFAULT_TTL, Session
from moot.stats import Stats
from moot.url import BACKENDS, BackendURL, did_you_mean, parse_url

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_TTL", "Coordinator", "connect", "default_member_id", "default_url"]

CORE_OPTIONS = frozenset(
    {"ttl", "namespace", "timeout", "heartbeat", "initial_reconnect_backoff", "max_reconnect_backoff"}
)


def default_url() -> str:
    """``$MOOT_URL`` if set, else a file:// directory private to this user."""
    if os.environ.get("MOOT_URL"):
        return os.environ["MOOT_URL"]
    from moot.backends.file.access import default_directory  # the file backend's, loaded only when used

    return f"file://{default_directory()}"


def default_member_id() -> str:
    """Unique per process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _load_backend(url: BackendURL, options: dict[str, Any]) -> Backend:
    module_name, class_name, extra, client = BACKENDS[url.scheme]
    if client is not None:
        try:
            importlib.import_module(client)
        except ImportError:
            raise missing_driver(f"the {url.scheme}:// backend", client, extra or url.scheme) from None
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    known_options = CORE_OPTIONS | cls.OPTIONS
    unknown = sorted(set(options) - known_options)
    if unknown:
        hints = "".join(did_you_mean(str(name), known_options) for name in unknown)
        raise InvalidURL(f"unknown option(s) {', '.join(map(str, unknown))} for {url.scheme}://{hints}; "
                         f"known: {', '.join(sorted(known_options))}")
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
    try:
        parsed = parse_url(default_url() if url is None else url)
        merged: dict[str, Any] = dict(parsed.query)
        merged.update(options)
        coordinator = Coordinator(parsed, member_id, merged)
        coordinator.session.start()
    except ConfigurationError as exc:
        if url is not None or not os.environ.get("MOOT_URL"):
            raise
        # The URL came from the environment: say so, or the user looks for it in the code.
        raise type(exc)(f"$MOOT_URL (the backend URL used when none is given): {exc}; fix or unset "
                        "$MOOT_URL, or pass a URL to moot.connect()") from None
    return coordinator


class Coordinator:
    """A session with a coordination backend, and the factory of every recipe.

    A context manager: ``close()`` on exit. Thread-safe."""

    def __init__(self, url: BackendURL, member_id: str | None, options: dict[str, Any]):
        self.session = Session(url.redacted(), member_id if member_id is not None else default_member_id(),
                               options, lambda: _load_backend(url, options))

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<moot.Coordinator {self.url} member_id={self.member_id!r} {state}>"

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release held locks, leave joined groups, end the session. Idempotent.

        In a child process that inherited this coordinator through fork(), it
        only marks it closed: the parent's session is never touched."""
        self.session.close()

    @property
    def closed(self) -> bool:
        return self.session.closed

    def check_open(self) -> None:
        """CoordinatorClosed (saying what to do) if closed or inherited through fork()."""
        self.session.check_open()

    # -- what the session is ------------------------------------------------
    @property
    def url(self) -> str:
        """The backend URL, password hidden."""
        return self.session.url

    @property
    def member_id(self) -> str:
        return self.session.member_id

    @property
    def namespace(self) -> str:
        return self.session.namespace

    @property
    def ttl(self) -> float:
        return self.session.ttl

    @property
    def timeout(self) -> float:
        return self.session.timeout

    @property
    def heartbeat_interval(self) -> float:
        return self.session.heartbeat_interval

    @property
    def session_id(self) -> str | None:
        """The engine's id of the current session (changes after a loss)."""
        return self.session.id

    @property
    def backend(self) -> Backend:
        """The backend's primitives (for tools and tests; recipes are the API)."""
        return self.session.backend

    @property
    def metrics(self) -> Stats:
        return self.session.metrics

    def key(self, *parts: str) -> str:
        """A backend key in this coordinator's namespace (parts already escaped)."""
        return self.session.key(*parts)

    def stats(self) -> dict[str, Any]:
        """This coordinator's figures so far: counters (acquisitions, timeouts,
        lost locks, reconnects, heartbeats...) and histograms (lock wait and
        hold time, heartbeat latency and lateness), by recipe kind."""
        return self.session.metrics.snapshot()

    def ping(self) -> str:
        """One round trip to the engine: a description of the server, or
        ConnectionLost if it does not answer within the ``timeout`` option."""
        self.session.check_open()
        with self.session.bounded():
            return self.session.backend.ping()

    # -- recipes ----------------------------------------------------------
    def lock(self, name: str, timeout: float | None = None,
             on_lost: Callable[[Lock], None] | None = None) -> Lock:
        """An exclusive, FIFO, fenced lock named ``name`` (not yet acquired).

        ``timeout`` is the default for ``acquire()`` and for ``with``."""
        return Lock(self.session, name, timeout=timeout, on_lost=on_lost)

    def lock_info(self, name: str) -> LockInfo | None:
        """Who holds lock ``name`` (member, token, since) and who waits, in
        order; None if nobody holds or waits for it."""
        self.session.check_open()
        with self.session.bounded():
            return lock_info(self.session, name)

    def watch_lock(self, name: str, callback: Callable[[], None]) -> Watch:
        """Call ``callback()`` (on a backend thread; keep it quick) after any
        change to who holds or waits for lock ``name``; ``cancel()`` the
        returned watch to stop. Spurious calls are possible: read again."""
        self.session.check_open()
        with self.session.bounded():
            return watch_lock(self.session, name, callback)

    def locks(self) -> list[LockInfo]:
        """Every lock that is held or waited for in this namespace."""
        self.session.check_open()
        with self.session.bounded():
            return all_locks(self.session)

    def group(self, name: str, member_id: str | None = None) -> Group:
        """The group ``name`` (created by the first ``join()``), joined as
        ``member_id`` (default: this coordinator's)."""
        return Group(self.session, name, member_id)

    def groups(self) -> list[str]:
        """Names of every group in this namespace."""
        self.session.check_open()
        with self.session.bounded():
            return all_groups(self.session)

    def election(self, name: str, on_lost: Callable[[Election], None] | None = None) -> Election:
        """The leader election ``name``; ``on_lost(election)`` is called (on
        the callback thread) if this coordinator's leadership is lost with
        its session."""
        return Election(self.session, name, on_lost)

    def rwlock(self, name: str, timeout: float | None = None,
               on_lost: Callable[[RWLock], None] | None = None) -> RWLock:
        """A shared/exclusive lock named ``name`` (``.read()``, ``.write()``,
        ``upgrade()``); it shares its queue with ``lock(name)``."""
        return RWLock(self.session, name, timeout=timeout, on_lost=on_lost)

    def semaphore(self, name: str, limit: int, timeout: float | None = None,
                  on_lost: Callable[[Semaphore], None] | None = None) -> Semaphore:
        """A counting semaphore: at most ``limit`` holders of ``name`` at once."""
        return Semaphore(self.session, name, limit, timeout=timeout, on_lost=on_lost)

    def semaphores(self) -> list[SemaphoreInfo]:
        """Every semaphore in use in this namespace, with holders and waiters."""
        self.session.check_open()
        with self.session.bounded():
            return semaphores(self.session)

    def partitioner(self, group_name: str, replicas: int = 1) -> Partitioner:
        """A consistent hash ring over the live members of ``group_name``."""
        return Partitioner(self.session, group_name, replicas=replicas)
