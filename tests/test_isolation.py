"""Isolation between tenants (issue 16): with the engine-side setup of
docs/security.md, run here as written (the shell blocks marked
``<!-- tried: ... -->``), tenant A's credentials pointed at tenant B's root
cannot list, delete, take over or block B's locks and memberships: each
attempt is moot.PermissionDenied and B's state is unchanged afterwards;
and A works normally in its own root with those least privileges.

memcached has no access control: there every attack is an expected
difference (tests/differences.py), not a skip."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import moot
from moot.errors import PermissionDenied
from tests import servers
from tests.waiting import wait_event

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
ENGINES = ["redis", "etcd", "postgresql", "mysql", "memcached"]
NS = "app"  # both tenants use the same namespace: only the root keeps them apart
TTL = 5.0


def doc_block(name: str) -> str:
    """The shell block of docs/security.md marked ``<!-- tried: name -->``."""
    found = re.search(rf"<!-- tried: {re.escape(name)} -->\n```sh\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"docs/security.md has no block marked 'tried: {name}'"
    return found.group(1)


def run_block(name: str, env: dict[str, str]) -> None:
    """Run that block with bash, as an operator would paste it, failing on any error."""
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", doc_block(name)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"block {name!r} failed:\n{done.stdout}\n{done.stderr}"


class Engine:
    """One engine with tenants made by the documented setup."""

    def __init__(self, kind: str, base_url: str, env: dict[str, str]):
        self.kind, self.base_url, self.env = kind, base_url, env
        self.address = base_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        self.tenants: list[str] = []

    def add(self, tenant: str, password: str) -> None:
        if self.kind != "memcached":
            run_block(self.kind, {**self.env, "TENANT": tenant, "PASSWORD": password})
        self.tenants.append(tenant)

    def url(self, tenant: str, password: str, root: str) -> str:
        """The URL of ``tenant``'s credentials at ``root``'s root."""
        who = f"{tenant}:{password}@{self.address}"
        return {
            "redis": f"redis://{who}/0?prefix={root}:",
            "etcd": f"etcd://{who}/{root}",
            "postgresql": f"postgresql://{who}/postgres?schema={root}",
            "mysql": f"mysql://{who}/{root}",
            "memcached": f"memcached://{self.address}",  # no credentials, no root
        }[self.kind]


Tenant = tuple[str, str]  # name, password


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest, server: Callable[[str], str]) -> Iterator[Engine]:
    kind = str(request.param)
    cluster = None
    if kind == "etcd":  # auth is switched on for good: an etcd of this module's own
        cluster = servers.start_cluster("etcd", size=1)
        made = Engine(kind, cluster.url, {"ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": cluster.url.replace("etcd", "http"),
                                          "ETCDCTL_USER": "root:root-pw"})
        run_block("etcd-once", {**made.env, "ETCDCTL_USER": "", "ROOT_PASSWORD": "root-pw"})
    else:
        url = server(kind)
        host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":")
        env = {
            "redis": {"REDIS_URL": url},
            "postgresql": {"PGHOST": host, "PGPORT": port, "PGUSER": "postgres", "PGDATABASE": "postgres"},
            "mysql": {"MYSQL_HOST": host, "MYSQL_TCP_PORT": port},
            "memcached": {},
        }[kind]
        made = Engine(kind, url, env)
    try:
        yield made
    finally:
        if cluster is not None:
            cluster.stop()
        else:
            _drop(made)


def _drop(engine: Engine) -> None:
    """Remove the tenants' users and roots from the shared server."""
    for tenant in engine.tenants:
        script = {
            "redis": f'redis-cli -u "$REDIS_URL" ACL DELUSER {tenant} >/dev/null; '
                     f'redis-cli -u "$REDIS_URL" --scan --pattern "{tenant}:*" | '
                     f'xargs -r redis-cli -u "$REDIS_URL" DEL >/dev/null',
            "postgresql": f"psql -q -c 'DROP SCHEMA IF EXISTS {tenant} CASCADE' -c 'DROP ROLE IF EXISTS {tenant}'",
            "mysql": f"mariadb -u root -e \"DROP DATABASE IF EXISTS {tenant}; DROP USER IF EXISTS '{tenant}'@'%'\"",
        }.get(engine.kind)
        if script:
            subprocess.run(["bash", "-c", script], env={**os.environ, **engine.env}, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def tenants(engine: Engine) -> tuple[Tenant, Tenant]:
    """Tenants A and B, set up as docs/security.md says."""
    made = []
    for letter in "ab":
        tenant = (f"t{letter}_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}")
        engine.add(*tenant)
        made.append(tenant)
    return made[0], made[1]


class TenantB:
    """B's coordinator holding a lock and a group membership."""

    def __init__(self, coord: moot.Coordinator):
        self.coord = coord
        self.lock = coord.lock("l")
        assert self.lock.acquire(timeout=5)
        self.group = coord.group("g")
        self.group.join()
        session = coord.session_id
        assert session is not None
        self.session = session
        entries = coord.backend.list(f"{NS}/lock/l/")
        assert len(entries) == 1
        self.entry = entries[0]

    def assert_unchanged(self) -> None:
        assert self.lock.is_held
        info = self.coord.lock_info("l")
        assert info is not None and info.holder == self.coord.member_id and info.waiters == ()
        assert list(self.group.members()) == [self.coord.member_id]
        assert self.coord.backend.list(f"{NS}/lock/l/") == [self.entry]
        assert self.coord.backend.session_last_seen(self.session) is not None


@pytest.fixture
def tenant_b(engine: Engine, tenants: tuple[Tenant, Tenant]) -> Iterator[TenantB]:
    (_, _), (b, b_pw) = tenants
    with moot.connect(engine.url(b, b_pw, b), namespace=NS, ttl=TTL, timeout=10, member_id="b") as coord:
        yield TenantB(coord)


ATTACKS: dict[str, Callable[[moot.Coordinator, TenantB], object]] = {
    "list_locks": lambda a, b: (a.locks(), a.lock_info("l")),
    "list_groups": lambda a, b: a.groups(),
    "list_members": lambda a, b: list(a.group("g").members()),
    "delete_lock_entry": lambda a, b: a.backend.delete(b.entry.key),
    "end_session": lambda a, b: a.backend.expire_session(b.session),
    "take_over_lock": lambda a, b: a.lock("l").acquire(timeout=0.5),
    "enqueue_on_lock": lambda a, b: a.lock("l").acquire(blocking=False),
    "join_group": lambda a, b: a.group("g").join(),
    "watch_lock": lambda a, b: a.watch_lock("l", lambda: None),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_tenant_cannot_reach_another_tenants_root(engine: Engine, tenants: tuple[Tenant, Tenant],
                                                     tenant_b: TenantB, attack: str) -> None:
    (a, a_pw), (b, _) = tenants
    with pytest.raises(PermissionDenied) as refused, \
            moot.connect(engine.url(a, a_pw, b), namespace=NS, ttl=TTL, timeout=10, member_id="a") as coord:
        ATTACKS[attack](coord, tenant_b)  # refused at connect() or here
    assert a_pw not in str(refused.value)
    tenant_b.assert_unchanged()


def test_a_tenant_works_in_its_own_root_with_least_privileges(engine: Engine, tenants: tuple[Tenant, Tenant],
                                                               tenant_b: TenantB) -> None:
    (a, a_pw), _ = tenants
    url = engine.url(a, a_pw, a)
    with moot.connect(url, namespace=NS, ttl=TTL, timeout=10, member_id="a1") as one, \
            moot.connect(url, namespace=NS, ttl=TTL, timeout=10, member_id="a2") as two:
        first = one.lock("l")
        assert first.acquire(timeout=5)  # B holds "l" of the same namespace in its own root
        released = threading.Event()
        one.watch_lock("l", released.set)
        waiter = two.lock("l")
        assert not waiter.acquire(blocking=False)
        first.release()
        wait_event(released, what="a watch in the tenant's own root")
        assert waiter.acquire(timeout=5)
        one.group("g").join({"role": "x"})
        two.group("g").join()
        assert sorted(one.group("g").members()) == ["a1", "a2"]
        assert one.groups() == ["g"] and [info.name for info in one.locks()] == ["l"]
        election = one.election("e")
        assert election.campaign(timeout=5)
        assert one.semaphore("s", 2).acquire(timeout=5) and one.rwlock("r").acquire_read(timeout=5)
        assert one.backend.expire_session(str(two.session_id))  # its own tenant's session: allowed
    tenant_b.assert_unchanged()


def test_postgresql_a_database_per_tenant(server: Callable[[str], str]) -> None:
    """The stricter PostgreSQL setup of docs/security.md: a database each
    (advisory locks and NOTIFY channels are then the tenant's alone)."""
    url = server("postgresql")
    engine = Engine("postgresql", url, {})
    host, port = engine.address.split(":")
    env = {"PGHOST": host, "PGPORT": port, "PGUSER": "postgres", "PGDATABASE": "postgres"}
    (a, a_pw), (b, b_pw) = [(f"t{x}_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}") for x in "ab"]
    try:
        for tenant, password in ((a, a_pw), (b, b_pw)):
            run_block("postgresql-database", {**env, "TENANT": tenant, "PASSWORD": password})
        with moot.connect(f"postgresql://{b}:{b_pw}@{engine.address}/{b}", namespace=NS, ttl=TTL) as coord:
            assert coord.lock("l").acquire(timeout=5)
            with moot.connect(f"postgresql://{a}:{a_pw}@{engine.address}/{a}", namespace=NS, ttl=TTL) as own:
                assert own.lock("l").acquire(timeout=5)
            with pytest.raises(PermissionDenied) as refused:
                moot.connect(f"postgresql://{a}:{a_pw}@{engine.address}/{b}", namespace=NS, ttl=TTL)
            assert a_pw not in str(refused.value)
            assert coord.lock_info("l") is not None
    finally:
        script = "; ".join(f"psql -q -c 'DROP DATABASE IF EXISTS {t} WITH (FORCE)' -c 'DROP ROLE IF EXISTS {t}'"
                           for t in (a, b))
        subprocess.run(["bash", "-c", script], env={**os.environ, **env}, capture_output=True, timeout=60)
