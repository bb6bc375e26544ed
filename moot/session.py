"""The session: the spine of moot, between the coordinator (a thin facade)
and the recipes (which take a session and never import the coordinator).

A :class:`Session` is one lease with the engine, renewed by a heartbeat, and
everything that depends on it: the holds and memberships bound to it (told
through the :class:`SessionListener` interface), the removals an outage
left undone, the user callbacks, and the key namespace.

Guarantees:

* ``start()`` returns only once the engine answered and a session is open.
* The heartbeat runs in a real OS thread (never a green thread, also under
  eventlet monkey-patching), every ``heartbeat`` seconds (default
  ``ttl / 3``, shorter if the engine granted a shorter TTL).
* Session validity: the session is trusted until the instant its last
  successful renewal was *sent*, plus the TTL the engine granted (the smaller
  of it and ``ttl``), minus a safety margin of a fifth of that TTL. The
  engine cannot expire the session before that instant plus the margin, so a
  holder stops trusting its locks before anybody else can take them:
  :meth:`Session.holds` reads the clock itself (it turns False on time even
  if no thread of this process gets the CPU), and the watchdog thread then
  reports the loss to every listener.
* A hold is bound to the session the moment it is served (:meth:`Session.bind`
  with the epoch it was served in): a loss at any point after that is
  reported to it, never missed.
* After a loss, the given-up session is revoked on the engine (its entries
  stop blocking others at once) before a new one is opened; listeners are
  then told ``session_renewed`` (groups join again).
* Every removal a recipe makes goes through :meth:`Session.delete_entry`:
  one rule for all of them (an unconfirmed removal is retried by the
  heartbeat, at the same version).
* ``close()`` tells every listener ``session_closing`` (locks released,
  groups left), ends the session and stops the threads; it never raises for
  state that is already gone. A session whose coordinator was dropped without
  ``close()`` warns (``ResourceWarning``) and ends when garbage-collected.
* After ``fork()``, an inherited session is closed in the child without any
  I/O on the parent's session: every call raises CoordinatorClosed.
* Every call honours its deadline (:mod:`moot.deadline`).

Long because validity, renewal, loss, binding and deferred removals share one
locking discipline (``_bound_lock`` before ``_session_lock``); kept in one
module so that discipline can be read, and checked, in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from moot import deadline, names, realthreads, waits
from moot.backends.base import Backend, Dispatcher, Entry
from moot.errors import (
    ConnectionLost,
    CoordinatorClosed,
    InvalidArgument,
    InvalidName,
    InvalidURL,
    MootError,
    SessionExpired,
)
from moot.realthreads import threading
from moot.stats import Stats
from moot.url import option_float

log = logging.getLogger("moot.session")
_T = TypeVar("_T")

DEFAULT_TTL = 10.0
DEFAULT_TIMEOUT = 10.0
#: Bounds of the ``ttl`` and ``timeout`` options (seconds).
MIN_TTL = 0.5
MIN_PERIOD = 0.01  # heartbeat and reconnection backoffs: no busy loop against the engine
MIN_TIMEOUT = 0.1  # below that not even a connection on the loopback is sure to be made
MAX_SECONDS = 3600.0
#: The share of the TTL a holder gives up before the engine may expire its session.
SAFETY_MARGIN = 0.2
#: How long the removal of a timed-out waiter's entry may run past the caller's deadline.
CLEANUP_GRACE = 0.5
#: Longest single wait on an event (waits longer than that loop, checking close()).
_WAIT_SLICE = 1.0
#: How many revoked sessions are remembered (to replace their leftover group records).
_PAST_SESSIONS = 16


class SessionListener(Protocol):
    """What a session tells the objects bound to it (held locks, joined
    groups, a leadership). Called on the session's own threads: quick, and
    never raising for state that is already gone."""

    def session_lost(self) -> None:
        """The session was given up: every hold made through it is lost."""

    def session_renewed(self) -> None:
        """A new session replaced a lost one (groups join again); raising
        makes the heartbeat call again on its next beat."""

    def session_closing(self) -> None:
        """The coordinator is closing: release or leave now."""


class HasSession(Protocol):
    """Anything that carries a session (a Coordinator)."""

    @property
    def session(self) -> Session: ...


class Session:
    """One session with a coordination engine; see the module docstring."""

    def __init__(self, url: str, member_id: str, options: Mapping[str, Any],
                 load_backend: Callable[[], Backend]):
        self.url = url
        self.member_id = names.check_name(member_id, "member_id")
        self.ttl = option_float(options, "ttl", DEFAULT_TTL, minimum=MIN_TTL, allow_equal=True,
                                maximum=MAX_SECONDS)
        self.timeout = option_float(options, "timeout", DEFAULT_TIMEOUT, minimum=MIN_TIMEOUT, allow_equal=True,
                                    maximum=MAX_SECONDS)
        self.margin = self.ttl * SAFETY_MARGIN  # with the TTL asked; a shorter grant shrinks it
        self.heartbeat_interval = option_float(options, "heartbeat", self.ttl / 3, minimum=MIN_PERIOD,
                                               allow_equal=True, maximum=MAX_SECONDS)
        if self.heartbeat_interval >= self.ttl - self.margin:
            raise InvalidURL(f"heartbeat={self.heartbeat_interval:g} must be shorter than ttl - ttl/5 "
                             f"= {self.ttl - self.margin:g} (a session must be renewed before it is given up)")
        self.initial_reconnect_backoff = option_float(options, "initial_reconnect_backoff", 0.1,
                                                      minimum=MIN_PERIOD, allow_equal=True, maximum=MAX_SECONDS)
        self.max_reconnect_backoff = option_float(options, "max_reconnect_backoff", max(1.0, self.ttl / 3),
                                                  minimum=MIN_PERIOD, allow_equal=True, maximum=MAX_SECONDS)
        namespace = options.get("namespace", "default")
        if not isinstance(namespace, str):
            raise InvalidName(f"namespace must be a str, not {type(namespace).__name__}")
        self.namespace = names.check_name(namespace, "namespace")
        self._prefix = names.segment(self.namespace) + "/"
        self.backend = load_backend()
        #: Whether the backend's primitives read the caller's deadline (:attr:`Backend.reads_deadline`).
        self.reads_deadline = self.backend.reads_deadline
        self.id: str | None = None
        self._past_sessions: list[str] = []  # revoked sessions of this coordinator, newest last
        self._abandoned: list[str] = []  # old sessions not revoked yet (the engine was unreachable)
        self._bound: set[SessionListener] = set()
        self._unrenewed: set[SessionListener] = set()  # to tell again: their renewal failed
        self._bound_lock = threading.Lock()
        self._closed = False
        self._forked = False
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by close(), the watchdog and the backend's session listener
        self._session_ok = realthreads.Event()  # waited on by application threads
        self._session_wakes: set[waits.Wake] = set()  # of steps waiting for a session (session_steps)
        self._session_lock = threading.Lock()
        self._epoch = 0  # bumped whenever the session is given up: holds of older epochs are lost
        self._valid_until = 0.0  # monotonic instant until which the session is trusted
        self._lapsed = False  # the session was seen past its validity: never extended again
        self._effective_ttl = self.ttl
        self._backoff = self.initial_reconnect_backoff
        self._last_ok = time.monotonic()
        self._undeleted: set[_Undeleted | _Unanswered] = set()
        self.metrics = Stats()
        self.callbacks: Dispatcher | None = None
        self._heartbeat: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<moot session {self.id} of {self.member_id!r} on {self.url} {state}>"

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        """Reach the engine and open the session (within the ``timeout``
        option), then start the heartbeat and watchdog threads."""
        started = time.monotonic()
        try:
            with deadline.bounded(started + self.timeout):
                self.backend.connect(self.timeout)
                self.backend.set_session_listener(self._wake.set)
                self._begin_session(time.monotonic())
        except MootError as exc:
            self.backend.close()
            if isinstance(exc, ConnectionLost):  # said once: the backend's words often name the URL and time
                message = str(exc)
                if not re.search(r"after \d", message):
                    message += f" (gave up after {time.monotonic() - started:.2f}s)"
                where = "" if self.url in message else f" to {self.url}"
                raise ConnectionLost(f"cannot connect{where}: {message}") from None
            raise
        except Exception as exc:  # a client library's own error: name it, hide secrets
            self.backend.close()
            raise ConnectionLost(f"cannot connect to {self.url}: {type(exc).__name__}") from None
        self.callbacks = Dispatcher("moot-callbacks", application=True)
        ref = weakref.ref(self)
        self._heartbeat = threading.Thread(target=_heartbeat_loop,
                                           args=(ref, self._stop, self._wake, self._heartbeat_wait()),
                                           name="moot-heartbeat", daemon=True)
        self._watchdog = threading.Thread(target=_watchdog_loop, args=(ref, self._stop),
                                          name="moot-watchdog", daemon=True)
        self._finalizer = weakref.finalize(self, _finalize, self.url, self.backend, self._stop, self._wake,
                                           self.callbacks)
        _LIVE.add(self)
        self._heartbeat.start()
        self._watchdog.start()

    def close(self) -> None:
        """Release held locks, leave joined groups, end the session. Idempotent.

        In a child process that inherited this coordinator through fork(), it
        only marks it closed: the parent's session is never touched."""
        if self._closed:
            return
        self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        self._stop.set()
        self._wake.set()
        for thread in (self._heartbeat, self._watchdog):
            if thread is not None and thread is not threading.current_thread():
                thread.join()
        with self._bound_lock:
            bound = list(self._bound)
        for item in bound:
            try:
                with deadline.bounded(time.monotonic() + self.timeout):
                    item.session_closing()
            except Exception:
                log.debug("error while closing %r", item, exc_info=True)
        try:
            with deadline.bounded(time.monotonic() + self.timeout):
                self.backend.close()
        except Exception:  # the session then ends with its TTL
            log.warning("moot: could not end the session on %s at close; it ends within its TTL", self.url,
                        exc_info=True)
        finally:
            if self.callbacks is not None:
                self.callbacks.close()
            _LIVE.discard(self)

    def _forget_after_fork(self) -> None:
        """In a forked child: closed at once, with no I/O on the parent's session."""
        self._forked = True
        self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        with self._session_lock:
            self._epoch += 1  # holds inherited from the parent are not ours
            self._session_ok.clear()
        self.callbacks = None
        try:
            self.backend.forget_after_fork()
        except Exception:
            log.debug("forgetting the inherited backend failed", exc_info=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        if self._forked:
            raise CoordinatorClosed(
                f"the coordinator of {self.member_id!r} on {self.url} was inherited through fork(): it belongs "
                "to the parent process and is closed here; call moot.connect() in the child (e.g. in a "
                "post-fork hook) for a session of its own")
        if self._closed:
            raise CoordinatorClosed(f"the coordinator of {self.member_id!r} on {self.url} is closed; open a "
                                    "new one with moot.connect()")

    def bounded(self, until: float | None = None) -> contextlib.AbstractContextManager[None]:
        """Bound the primitives run in this block by ``until`` (a monotonic
        deadline, e.g. an acquire's) or else by the ``timeout`` option."""
        if not self.reads_deadline:
            return deadline.UNBOUNDED
        return deadline.bounded(time.monotonic() + self.timeout if until is None else until)

    # -- session ----------------------------------------------------------
    @property
    def epoch(self) -> int:
        """Changes whenever the session is given up; a hold records it when served."""
        return self._epoch

    def bind(self, item: SessionListener, epoch: int | None = None, install: Callable[..., None] | None = None,
             *args: Any) -> bool:
        """Tell ``item`` when the session is lost or renewed, until unbound.

        With ``epoch``: only if the session of that epoch is still trusted,
        and then ``install(*args)`` runs first under the same lock, so a loss
        is either seen by the caller (False, nothing installed) or reported
        to ``item`` afterwards, never missed in between."""
        with self._bound_lock:
            if epoch is not None:
                if not self.holds(epoch):
                    return False
                if install is not None:
                    install(*args)
            self._bound.add(item)
        return True

    def unbind(self, item: SessionListener) -> None:
        with self._bound_lock:
            self._bound.discard(item)
            self._unrenewed.discard(item)

    def holds(self, epoch: int) -> bool:
        """True while the session of ``epoch`` is trusted (see the module
        docstring); reads the clock, so it turns False on time even if the
        watchdog thread is not scheduled. Once False, False for good."""
        with self._session_lock:
            if epoch != self._epoch or not self._session_ok.is_set():
                return False
            if self._locked_valid():
                return True
        self._wake.set()
        return False

    def _locked_valid(self) -> bool:
        """The one validity rule (caller holds ``_session_lock``): trusted
        until ``_valid_until``; once past it, never again (``_lapsed``), even
        if a late renewal succeeds, since holders may have been told."""
        if not self._lapsed and time.monotonic() >= self._valid_until:
            self._lapsed = True
        return not self._lapsed

    def _trust(self, sent: float) -> None:
        """Trust the session until ``sent`` plus the granted TTL less its
        margin (caller holds ``_session_lock``)."""
        granted = self.backend.granted_ttl  # a reconnection to another server may change it
        self._effective_ttl = self.ttl if granted is None else min(self.ttl, granted)
        self._valid_until = sent + self._effective_ttl * (1 - SAFETY_MARGIN)
        self._last_ok = sent

    def live(self) -> bool:
        """True while a session is open (none given up and not yet replaced)."""
        return self._session_ok.is_set()

    def wait_for_session(self, until: float | None) -> bool:
        """Block until a live session exists (after a loss); False on deadline."""
        return waits.run(waits.Plan(self.session_steps(until), None))

    def session_steps(self, until: float | None) -> waits.Steps[bool]:
        """:func:`wait_for_session` as steps (:mod:`moot.waits`), for either API."""
        if self._session_ok.is_set():
            return True
        wake = waits.Wake()
        with self._session_lock:
            self._session_wakes.add(wake)
        try:
            while not self._session_ok.is_set():
                remaining = _WAIT_SLICE if until is None else min(_WAIT_SLICE, until - time.monotonic())
                if (yield waits.Wait(wake, max(0.0, remaining))):
                    continue
                self.check_open()
                if until is not None and time.monotonic() >= until:
                    return False
            return True
        finally:
            with self._session_lock:
                self._session_wakes.discard(wake)

    def _begin_session(self, sent: float) -> None:
        """Open a session (``sent``: when the request left) and trust it."""
        self.id = self.backend.open_session(self.ttl)
        with self._session_lock:
            self._lapsed = False
            self._trust(sent)
            self._session_ok.set()
            wakes = list(self._session_wakes)
        for wake in wakes:
            wake.set()

    def _renewed(self, sent: float) -> bool:
        """A renewal sent at ``sent`` succeeded: trust the session longer,
        unless it already lapsed (then holders may have been told: False)."""
        with self._session_lock:
            if not self._locked_valid():
                return False
            self._trust(sent)  # renewals are sequential: each one was sent after the last
            return True

    def _heartbeat_wait(self) -> float:
        """Seconds until the next renewal is due."""
        return min(self.heartbeat_interval, self._effective_ttl * (1 - SAFETY_MARGIN) / 3)

    def _heartbeat_step(self) -> float:
        """One renewal (or reconnection); returns the seconds to wait before the next."""
        started = time.monotonic()
        try:
            with deadline.bounded(started + self.timeout):
                if self._session_ok.is_set():
                    self._refresh(started)
                if not self._session_ok.is_set():
                    self._reconnect()
                if self._undeleted:
                    self._retry_deletes()
                if self._unrenewed:
                    self._renew_bound(retry=True)
        except Exception as exc:  # ConnectionLost or a client library error
            self.metrics.count("heartbeat_failures")
            log.warning("moot: heartbeat to %s failed (%s); retrying in %.2fs", self.url,
                        type(exc).__name__, self._backoff)
            wait = self._backoff
            self._backoff = min(self._backoff * 2, self.max_reconnect_backoff)
            return wait
        self._backoff = self.initial_reconnect_backoff
        return self._heartbeat_wait()

    def _refresh(self, started: float) -> None:
        late = max(0.0, started - self._last_ok - self._heartbeat_wait())
        with self._session_lock:
            valid = self._locked_valid()
        if not valid:
            self._declare_lost("no successful renewal within the TTL less its safety margin")
            return
        try:
            with deadline.bounded(self._valid_until):  # no use waiting past the validity
                self.backend.refresh_session()
        except SessionExpired:
            self._declare_lost("the session expired")
            return
        if not self._renewed(started):
            self._declare_lost("the session was not renewed in time")
            return
        if late > self.ttl / 3:
            log.warning("moot: heartbeat ran %.2fs late (ttl %.1fs) on %s", late, self.ttl, self.url)
        self.metrics.timed("heartbeats", "heartbeat_seconds", "coordinator", time.monotonic() - started)
        self.metrics.observe("heartbeat_lateness_seconds", "coordinator", late)

    def _reconnect(self) -> None:
        """Revoke the given-up session on the engine (its entries stop blocking
        others at once), then open a new one and restore memberships."""
        old = self.id
        if old is not None and old not in self._abandoned and old not in self._past_sessions:
            self._abandoned.append(old)
        for session_id in list(self._abandoned):
            self.backend.expire_session(session_id)  # ConnectionLost: again on the next beat
            self._abandoned.remove(session_id)
            self._past_sessions = [*self._past_sessions, session_id][-_PAST_SESSIONS:]
        with contextlib.suppress(SessionExpired):
            self.backend.close_session()  # a backend holds one session: make room for the new one
        self._begin_session(time.monotonic())
        self.metrics.count("reconnects")
        log.warning("moot: new session opened on %s for %s", self.url, self.member_id)
        self._renew_bound()

    def is_own_past_session(self, session_id: str | None) -> bool:
        """True if ``session_id`` is a session this coordinator gave up."""
        return session_id is not None and session_id in self._past_sessions

    def _watchdog_step(self) -> float:
        """Report the loss once the session is past its validity, even while
        a renewal call still hangs; returns the seconds until the next check."""
        if not self._session_ok.is_set():
            return self._heartbeat_wait()
        with self._session_lock:
            remaining = self._valid_until - time.monotonic() if self._locked_valid() else 0.0
        if remaining > 0:
            return remaining
        self._declare_lost("no successful renewal within the TTL less its safety margin")
        self._wake.set()
        return self._heartbeat_wait()

    def _declare_lost(self, why: str) -> None:
        """Tell every holder its locks are gone (once per session)."""
        with self._bound_lock:
            with self._session_lock:
                if not self._session_ok.is_set():
                    return
                self._session_ok.clear()
                self._epoch += 1
            self._undeleted.clear()  # ephemeral: they end with the session
            bound = list(self._bound)
        self.metrics.count("sessions_lost")
        log.warning("moot: session of %s on %s lost: %s; its locks are lost", self.member_id, self.url, why)
        for item in bound:
            try:
                item.session_lost()
            except Exception:
                log.exception("moot: error while reporting a lost session to %r", item)

    def _renew_bound(self, retry: bool = False) -> None:
        with self._bound_lock:
            bound = list(self._unrenewed if retry else self._bound)
            self._unrenewed.clear()
        for item in bound:
            try:
                item.session_renewed()
            except Exception as exc:
                with self._bound_lock:
                    if item in self._bound:
                        self._unrenewed.add(item)
                if isinstance(exc, MootError):
                    log.log(logging.DEBUG if isinstance(exc, ConnectionLost) else logging.WARNING, "moot: %s", exc)
                else:
                    log.exception("moot: error while renewing %r on a new session", item)

    def delete_entry(self, key: str, version: int | None = None) -> bool:
        """Delete an entry of this session (a released lock, a left queue or
        group), only at ``version`` if given: the one path for a recipe's
        removals. If the engine cannot be reached now, the heartbeat deletes
        it as soon as it can (at that version: a record made again meanwhile
        is left alone), so a live session never keeps a stale entry; the
        ConnectionLost is raised all the same, for the caller to report."""
        try:
            return self.backend.delete(key, version)
        except SessionExpired:
            return False
        except ConnectionLost:
            with self._bound_lock:
                self._undeleted.add(_Undeleted(key, version))
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
                        if entry.owner == self.id and entry.value == item.value:
                            self.backend.delete(entry.key)
                else:
                    self.backend.delete(item.key, item.version)
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
                with self.bounded():
                    fn()
            except ConnectionLost:
                timer = threading.Timer(self.initial_reconnect_backoff, self.run_callback, (fn,))
                timer.daemon = True
                timer.start()

        return run

    def key(self, *parts: str) -> str:
        """A backend key in this coordinator's namespace (parts already escaped)."""
        return self._prefix + "/".join(parts)


#: Every open session of this process (for the fork handler).
_LIVE: weakref.WeakSet[Session] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for session in list(_LIVE):
        session._forget_after_fork()
    _LIVE.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _heartbeat_loop(ref: weakref.ref[Session], stop: Any, wake: Any, wait: float) -> None:
    """The heartbeat thread; holds the session only while it works (an
    abandoned coordinator must be collectable). The first renewal is due
    ``wait`` seconds after the session opened, not at once: it was just
    opened, and renewing it then is a wasted request per connect."""
    while True:
        wake.wait(wait)
        wake.clear()
        if stop.is_set():
            return
        session = ref()
        if session is None:
            return
        wait = session._heartbeat_step()
        del session


def _watchdog_loop(ref: weakref.ref[Session], stop: Any) -> None:
    """The watchdog thread; holds the session only while it checks."""
    wait = 0.0
    while not stop.wait(wait):
        session = ref()
        if session is None:
            return
        wait = session._watchdog_step()
        del session


def _finalize(url: str, backend: Backend, stop: Any, wake: Any, callbacks: Dispatcher) -> None:
    """A coordinator collected without close(): warn, stop its threads and end
    its session, so its locks do not stay held for the life of the process.

    The garbage collector runs this in whatever thread allocates, possibly one
    inside a backend's critical section: the backend is closed on a thread of
    its own (inline only at interpreter exit, where no thread can start)."""
    stop.set()
    wake.set()
    warnings.warn(f"moot coordinator for {url} was never closed; its session is ended now. "
                  "Call close() or use it as a context manager", ResourceWarning, stacklevel=1)

    def end() -> None:
        try:
            backend.close()
        finally:
            callbacks.close(timeout=0)

    try:
        realthreads.threading.Thread(target=end, name="moot-finalize", daemon=True).start()
    except RuntimeError:  # interpreter shutdown
        end()


@dataclasses.dataclass(frozen=True)
class _Undeleted:
    """A removal the engine did not confirm: the entry may still exist."""

    key: str
    version: int | None


@dataclasses.dataclass(frozen=True)
class _Unanswered:
    """An enqueue whose answer was lost: its entry may exist."""

    prefix: str
    value: bytes


_TIMEOUT_MAX = threading.TIMEOUT_MAX


def check_timeout(timeout: float | None) -> float | None:
    """Validate a user timeout (None = forever); returns the monotonic deadline.
    A timeout longer than ``threading.TIMEOUT_MAX`` (about 292 years) waits forever."""
    if timeout is None:
        return None
    if type(timeout) is float and 0 <= timeout < _TIMEOUT_MAX:  # the common case, checked at once
        return time.monotonic() + timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout != timeout:
        raise InvalidArgument(f"timeout must be a number of seconds or None, not {timeout!r}")
    if timeout < 0:
        raise InvalidArgument(f"timeout must not be negative (got {timeout}); use None to wait forever")
    if timeout >= threading.TIMEOUT_MAX:
        return None
    return time.monotonic() + timeout


def within_timeout(method: Callable[..., _T]) -> Callable[..., _T]:
    """Bound a recipe method (of an object with ``_session``) by the
    session's ``timeout`` option: it returns or raises in time."""

    @functools.wraps(method)
    def bounded(self: Any, *args: Any, **kwargs: Any) -> _T:
        with self._session.bounded():
            return method(self, *args, **kwargs)

    return bounded
