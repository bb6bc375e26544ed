"""Fixtures shared by every test: the backend URLs the conformance suite runs
against, coordinators isolated per test by a fresh namespace, and raw
backend objects (the primitives, below any coordinator).

By default every backend kind in :data:`KINDS` is tested; the servers behind
them are started once per test process by ``tests/servers.py`` (a missing
server fails the run, it is never skipped; ``make test`` runs two processes,
pytest-xdist's workers, each on servers of its own, so that no test sees
another's requests or faults). ``MOOT_TEST_URLS=url[,url...]`` runs the suite
against those URLs only, and a bare kind (``MOOT_TEST_URLS=redis``) against
a server of that kind started for the run (handy while developing one backend).
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import moot
from moot import coordinator
from moot.backends.base import Backend
from moot.url import parse_url
from tests import aio_bridge

#: Every backend kind the conformance suite runs on.
KINDS = ["memory", "file", "redis", "zookeeper", "etcd", "postgresql", "mysql", "memcached"]
SERVER_KINDS = {"redis", "zookeeper", "etcd", "postgresql", "mysql", "memcached"}

#: Conformance modules whose test bodies run twice: through the blocking API
#: and through moot.aio (behind tests/aio_bridge.py's blocking face).
BOTH_APIS = {"test_lock", "test_group", "test_election", "test_rwlock", "test_semaphore"}

#: Short session TTL used by tests so that expiry-based tests stay fast.
TEST_TTL = 2.0


#: The fault suite's seed (tests/faults), drawn once per run when this file is first loaded: before
#: pytest-xdist starts its workers, which inherit the environment. One seed, which the summary prints,
#: replays the run.
os.environ.setdefault("MOOT_FAULT_SEED", str(random.SystemRandom().randrange(1, 1_000_000)))


def _selected() -> list[tuple[str, str | None]]:
    """(kind, explicit url or None) pairs for this run."""
    given = os.environ.get("MOOT_TEST_URLS")
    if given:
        urls = [u.strip() for u in given.split(",") if u.strip()]
        return [(u.split("://", 1)[0], u) if "://" in u else (u, None) for u in urls]
    return [(kind, None) for kind in KINDS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        kinds = [kind for kind, _ in _selected()]
        if metafunc.definition.get_closest_marker("multiprocess"):
            kinds = [kind for kind in kinds if kind != "memory"]  # one process by definition
        if metafunc.definition.get_closest_marker("network"):
            kinds = [kind for kind in kinds if kind in SERVER_KINDS]  # a server at the other end of a socket
        metafunc.parametrize("backend", kinds, ids=kinds, indirect=True)
    if "connect" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_APIS:
        metafunc.parametrize("api", ["sync", "async"], indirect=True)


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """kind -> base URL for every selected kind; servers started once per test process."""
    selected = _selected()
    urls = {kind: url for kind, url in selected if url is not None}
    missing = [kind for kind, url in selected if url is None]
    if "memory" in missing:
        urls["memory"] = "memory://conformance"
    if "file" in missing:
        urls["file"] = f"file://{tmp_path_factory.mktemp('file-backend')}"
    wanted = [kind for kind in missing if kind in SERVER_KINDS]
    if not wanted:
        yield urls
        return
    from tests import servers

    try:
        urls.update(servers.start(wanted))
        yield urls
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def server(server_urls: dict[str, str]) -> Callable[[str], str]:
    """``server(kind)``: the URL of a server of that kind shared by the whole
    run (started on first use if this run's backends did not include it)."""

    def get(kind: str) -> str:
        if kind not in server_urls:
            from tests import servers

            server_urls.update(servers.start([kind]))
        return server_urls[kind]

    return get


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The kind under test (parametrized over every selected backend)."""
    return str(request.param)


@pytest.fixture
def url(backend: str, server_urls: dict[str, str]) -> str:
    """Base URL of the backend under test."""
    return server_urls[backend]


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


Connect = Callable[..., moot.Coordinator]


@pytest.fixture
def api(request: pytest.FixtureRequest) -> str:
    """The API a test's coordinators use: ``sync``, or ``async`` (moot.aio
    behind tests/aio_bridge.py) for the modules in :data:`BOTH_APIS`."""
    return str(getattr(request, "param", "sync"))


@pytest.fixture
def connect(url: str, namespace: str, api: str) -> Iterator[Connect]:
    """``connect(member_id=None, **options)``: a coordinator on the backend
    under test, in this test's own namespace, closed after the test."""
    opened: list[moot.Coordinator] = []

    def make(member_id: str | None = None, **options: Any) -> moot.Coordinator:
        options.setdefault("ttl", TEST_TTL)
        options.setdefault("namespace", namespace)
        if api == "async":
            coord: moot.Coordinator = aio_bridge.connect(url, member_id=member_id, **options)
        else:
            coord = moot.connect(url, member_id=member_id, **options)
        opened.append(coord)
        return coord

    if api == "async":
        aio_bridge.loop_thread().guard.take()
    yield make
    for coord in opened:
        coord.close()
    if api == "async":
        violations = aio_bridge.loop_thread().guard.take()
        assert not violations, "moot blocked the event loop:\n" + "\n".join(violations)


MakeBackend = Callable[..., Backend]


@pytest.fixture
def open_backend() -> Iterator[MakeBackend]:
    """``open_backend(url, ttl=None, timeout=10.0, **options)``: a connected
    :class:`~moot.backends.base.Backend` for ``url``, built as the coordinator
    builds it (the URL's query, then ``options``), with a session opened with
    ``ttl`` unless it is None; every one made is closed after the test."""
    opened: list[Backend] = []

    def make(url: str, ttl: float | None = None, timeout: float = 10.0, **options: Any) -> Backend:
        parsed = parse_url(url)
        made = coordinator._load_backend(parsed, {**parsed.query, **options})
        opened.append(made)
        made.connect(timeout)
        if ttl is not None:
            made.open_session(ttl)
        return made

    yield make
    for made in opened:
        made.close()


@pytest.fixture
def make_backend(url: str, open_backend: MakeBackend) -> MakeBackend:
    """``make_backend(ttl=TEST_TTL, url=None, **options)``: :func:`open_backend`
    of the kind under test, with a session opened with ``ttl`` (none if
    ``ttl`` is None). Backend objects have no namespace: tests put their keys
    under ``namespace``."""
    base_url = url

    def make(ttl: float | None = TEST_TTL, url: str | None = None, **options: Any) -> Backend:
        return open_backend(url or base_url, ttl=ttl, **options)

    return make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the expected differences of :mod:`tests.differences` as strict xfails."""
    from tests.differences import EXPECTED

    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        kind = params.get("backend", params.get("engine"))  # tests/test_isolation.py names it engine
        reason = EXPECTED.get(str(kind), {}).get(item.nodeid.split("[", 1)[0])
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"expected difference on {kind}: {reason}"))


def _summaries() -> dict[str, list[str]]:
    """This process's sections of the end-of-run summary: title -> lines."""
    sections: dict[str, list[str]] = {}
    rows = list(aio_bridge.STALLS)
    bridge = aio_bridge.summary()
    if bridge is not None:
        rows.append(bridge)
    if rows:  # where moot.aio ran in debug mode; moot's own I/O and waits on a loop's thread fail the tests instead
        sections["asyncio debug mode: slow callbacks (> 5 ms)"] = [
            f"{where}: {count} reported, longest {longest * 1000:.1f} ms" for where, count, longest in rows]
    faults = sys.modules.get("tests.faults.conftest")
    if faults is not None and faults.RESULTS:
        sections[f"fault suite (MOOT_FAULT_SEED={faults.SEED})"] = [
            *(f"{test_id} [{seconds:.0f}s]: {line}" for test_id, line, seconds in faults.RESULTS),
            f"fault scenarios: {sum(r[2] for r in faults.RESULTS):.0f} s in all"]
    return sections


#: The summary sections pytest-xdist's workers handed over as they ended.
_FROM_WORKERS: dict[str, list[str]] = {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: its summary goes to the controller, which prints it
        workeroutput["summaries"] = _summaries()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    worker = getattr(getattr(node, "gateway", None), "id", "?")
    for title, lines in getattr(node, "workeroutput", {}).get("summaries", {}).items():
        _FROM_WORKERS.setdefault(title, []).extend(f"{line} ({worker})" for line in lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """asyncio's slow-callback reports and the fault suite's scenarios, of this process and of every
    pytest-xdist worker."""
    sections = _summaries()
    for title, lines in _FROM_WORKERS.items():
        sections.setdefault(title, []).extend(lines)
    for title, lines in sections.items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
