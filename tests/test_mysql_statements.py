"""How many statements the MySQL/MariaDB backend sends per primitive, and
that both forms of its writes keep the same answers: on MariaDB each of
enqueue, delete and create_sequential is one compound statement
(``BEGIN NOT ATOMIC ... END``) and a session refresh one autocommitted
UPDATE; the multi-statement batches (what MySQL gets) still give the same
sequence numbers, listings, deletes and SessionExpired.

The server is the run's shared mysql server (``$MOOT_TEST_MYSQL_URL`` if set).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from moot.backends.mysql import MySQLBackend, sql
from moot.errors import SessionExpired
from tests.conftest import MakeBackend

Make = Callable[..., MySQLBackend]


@pytest.fixture(scope="module")
def my_url(server: Callable[[str], str]) -> str:
    return server("mysql")


@pytest.fixture
def make(my_url: str, open_backend: MakeBackend) -> Make:
    return lambda **options: open_backend(my_url, ttl=10.0, timeout=5.0, **options)


@pytest.fixture
def prefix() -> str:
    return f"s-{uuid.uuid4().hex[:10]}/"


def _questions(backend: MySQLBackend, pool: object) -> int:
    """The statements the server counted on ``pool``'s one connection (this query included)."""
    (_, value), = backend._call("SHOW SESSION STATUS LIKE 'Questions'", [], pool=pool)[-1]  # type: ignore[arg-type]
    return int(value)


def _counted(backend: MySQLBackend, pool: object, action: Callable[[], object]) -> int:
    """Statements ``action`` sent on ``pool`` (net of the counting queries themselves)."""
    idle = -_questions(backend, pool) + _questions(backend, pool)
    before = _questions(backend, pool)
    action()
    return _questions(backend, pool) - before - idle


def test_on_mariadb_each_write_of_an_acquire_release_and_a_refresh_is_one_statement(
        make: Make, prefix: str) -> None:
    backend = make(max_connections=1)
    assert backend._pool is not None
    if not sql.compound(backend._pool.server):
        pytest.skip(f"not MariaDB: {backend._pool.server}")
    assert backend._blocks
    holder = backend._hint_pool  # enqueues and deletes with hints go through the holder's connection
    backend.enqueue(f"{prefix}q/", b"warm")  # the holder's connection opens
    entries: list[object] = []
    assert _counted(backend, holder, lambda: entries.append(backend.enqueue(f"{prefix}q/", b"a")[0])) == 1
    assert _counted(backend, holder, lambda: backend.delete(entries[0].key)) == 1  # type: ignore[attr-defined]
    assert _counted(backend, backend._pool, backend.refresh_session) == 1
    assert _counted(backend, backend._pool, lambda: backend.create_sequential(f"{prefix}s/", b"x")) == 1


@pytest.mark.parametrize("blocks", [True, False], ids=["compound", "batches"])
def test_both_forms_of_the_writes_give_the_same_answers(make: Make, prefix: str, blocks: bool) -> None:
    backend = make()
    assert backend._pool is not None
    if blocks and not sql.compound(backend._pool.server):
        pytest.skip(f"not MariaDB: {backend._pool.server}")
    backend._blocks = blocks
    other = make()
    first, queue = backend.enqueue(f"{prefix}q/", b"a")
    second, queue2 = other.enqueue(f"{prefix}q/", b"b")
    assert [e.key for e in queue] == [first.key]
    assert [(e.key, e.value) for e in queue2] == [(first.key, b"a"), (second.key, b"b")]
    assert first.seq is not None and second.seq is not None and second.seq > first.seq
    assert first.key == f"{prefix}q/{first.seq:020d}" and first.version == first.seq
    third = backend.create_sequential(f"{prefix}q/", b"c")
    assert third.seq is not None and third.seq > second.seq
    assert backend.delete(first.key) is True
    assert backend.delete(first.key) is False
    assert backend.get(first.key) is None
    made = backend.create(f"{prefix}k", b"v")
    assert made is not None
    assert backend.delete(f"{prefix}k", made.version + 1) is False
    assert backend.delete(f"{prefix}k", made.version) is True
    backend.refresh_session()
    assert backend.expire_session(backend._session[0])  # type: ignore[index]
    with pytest.raises(SessionExpired):
        backend.refresh_session()
    with pytest.raises(SessionExpired):
        backend.enqueue(f"{prefix}q/", b"late")
    with pytest.raises(SessionExpired):
        backend.create_sequential(f"{prefix}q/", b"late")
    assert [e.key for e in other.list(f"{prefix}q/")] == [second.key]  # the ended session's entries went


@pytest.mark.parametrize(("server", "expected"), [
    ("10.11.19-MariaDB-1:10.11.19+maria~deb12", True), ("10.1.48-MariaDB", True), ("5.5.68-MariaDB", False),
    ("10.0.38-MariaDB", False), ("11.4.2-MariaDB-log", True), ("8.0.36", False), ("8.4.0-percona", False), ("?", False),
])
def test_compound_statements_are_used_on_mariadb_10_1_and_later_only(server: str, expected: bool) -> None:
    assert sql.compound(server) is expected
