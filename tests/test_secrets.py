"""Secrets never show (issue 16, item 6): on every networked backend, with a
user whose password is made for this run on a real server (with the
engine's own admin access), connecting with a wrong password and with the
right one, and failing over (a Sentinel failover, a ZooKeeper or etcd
leader killed), nothing moot or its clients print carries the password:

* every log record of every logger, at DEBUG, with its traceback;
* str/repr of the coordinator, its backend, the parsed URL, ping() and stats();
* every exception raised: its str, repr, args and traceback, and every
  exception it chains (``__cause__`` and ``__context__``, shown or not);
* the CLI's stdout and stderr (``moot -v ping`` and ``moot -v --json locks``,
  the URL given with --url and with $MOOT_URL), right and wrong password;
* the Prometheus exposition of the coordinator's metrics;
* anything written to this process's stdout/stderr meanwhile.

Both passwords carry one random marker made per run, so any piece of either
found anywhere is a leak, whatever the text around it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

import moot
import moot.metrics
from moot.url import parse_url
from tests import servers
from tests.waiting import BOUND, wait_until

MARK = uuid.uuid4().hex[:12]  # in both passwords: finding it anywhere is a leak
PASSWORD = f"S3c-{MARK}!x"
WRONG = f"Wr0-{MARK}!y"
SENTINEL_PASSWORD = f"Sn7-{MARK}z"  # a password given as an option in the query, not in the authority
USER = f"moot_{uuid.uuid4().hex[:6]}"
ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Target:
    """A backend with a user of password PASSWORD: the URLs to use it."""

    good: str
    bad: list[str]  # each refused
    failover: Callable[[], None] | None = None  # makes the engine fail over under a connected client
    secrets: Callable[[moot.Coordinator], list[str]] = lambda coord: []  # others to look for (tokens)


class Seen:
    """Every text moot let out during a test, by where it came from."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.secrets: list[str] = []  # secrets other than the passwords (an etcd token)

    def add(self, where: str, text: object) -> None:
        self.texts.append((where, str(text)))

    def exception(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: traceback", "".join(traceback.format_exception(exc)))
        stack: list[BaseException | None] = [exc]
        seen: set[int] = set()
        while stack:
            error = stack.pop()
            if error is None or id(error) in seen:
                continue
            seen.add(id(error))
            self.add(f"{where}: {type(error).__name__}", f"{error!s} {error!r} {error.args!r}")
            stack += [error.__cause__, error.__context__]

    def leaks(self) -> list[str]:
        return [f"{where}: ...{text[max(0, text.find(mark) - 120):text.find(mark) + 40]}..."
                for where, text in self.texts for mark in (MARK, *self.secrets) if mark in text]


class _Records(logging.Handler):
    def __init__(self, seen: Seen):
        super().__init__(logging.NOTSET)
        self.seen = seen
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.add(f"log {record.name}", self.format(record))  # with the traceback of exc_info


@pytest.fixture
def seen(capfd: pytest.CaptureFixture[str]) -> Iterator[Seen]:
    """Everything let out, checked for the marker at the end of the test."""
    found = Seen()
    handler = _Records(found)
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if logger.parent is None or not logger.propagate:
            logger.addHandler(handler)
    logging.captureWarnings(True)
    probe = f"capture probe {uuid.uuid4().hex}"
    logging.getLogger("moot.backends.probe").debug(probe)  # a logger made now, like those imported later
    try:
        yield found
    finally:
        logging.captureWarnings(False)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.removeHandler(handler)
    out, err = capfd.readouterr()
    found.add("this process's stdout", out)
    found.add("this process's stderr", err)
    assert any(probe in text for _, text in found.texts), "a DEBUG record was not captured: the capture is broken"
    leaks = found.leaks()
    assert not leaks, "the password showed:\n" + "\n".join(leaks)


def _cli(seen: Seen, url: str, *args: str, via_env: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MOOT_URL"}
    argv = [sys.executable, "-m", "moot", "-v", *args]
    if via_env:
        env["MOOT_URL"] = url
    else:
        argv[3:3] = ["--url", url]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    seen.add(f"cli {' '.join(args)} stdout", done.stdout)
    seen.add(f"cli {' '.join(args)} stderr", done.stderr)
    return done


def _use(seen: Seen, coord: moot.Coordinator, name: str) -> bool:
    """Take a lock, join a group, list both; whether the lock was still held when released (a failover
    in progress may take it: the coordinator gives a lock up when it cannot tell its session lives)."""
    lock = coord.lock(name)
    assert lock.acquire(timeout=BOUND)
    coord.group("workers").join()
    seen.add("members", coord.group("workers").members())
    seen.add("locks", coord.locks())
    kept = lock.release()
    coord.group("workers").leave()
    return kept


def _exercise(seen: Seen, target: Target) -> None:
    # A wrong password: refused, typed, and silent about every password.
    for bad in target.bad:
        with pytest.raises(moot.ConfigurationError) as refused:
            moot.connect(bad, timeout=10, ttl=5)
        seen.exception("connect, wrong password", refused.value)
        for via_env in (False, True):
            done = _cli(seen, bad, "ping", via_env=via_env)
            assert done.returncode != 0
        assert _cli(seen, bad, "--json", "locks").returncode != 0
    # The right one.
    for url in (target.good, *target.bad):
        parsed = parse_url(url)
        seen.add("parsed URL", f"{parsed!s} {parsed!r} {parsed.redacted()}")
    registry = CollectorRegistry()
    coord = moot.connect(target.good, timeout=10, ttl=5, namespace=f"s-{MARK[:4]}")
    try:
        moot.metrics.enable(coord, registry)
        seen.add("coordinator", f"{coord!s} {coord!r} {coord.url}")
        seen.add("backend", f"{coord.backend!s} {coord.backend!r} {coord.backend.url!s} {coord.backend.url!r}")
        seen.add("session", repr(coord.session))
        seen.add("ping", coord.ping())
        assert _use(seen, coord, "before")
        if target.failover is not None:
            target.failover()

            def works() -> bool:
                try:
                    return _use(seen, coord, "after")
                except moot.MootError as exc:
                    seen.exception("during the failover", exc)
                    return False

            wait_until(works, timeout=60, what="the coordinator to work again after the failover")
        seen.add("stats", coord.stats())
        seen.secrets += target.secrets(coord)
        seen.add("metrics", generate_latest(registry).decode())
    finally:
        coord.close()
    assert "moot_" in generate_latest(registry).decode()  # the exposition was there to check
    assert _cli(seen, target.good, "ping").returncode == 0
    assert _cli(seen, target.good, "--json", "locks").returncode == 0


def _address(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]


def _with_user(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{USER}:{password}@{rest.split('@', 1)[-1]}"


# -- the engines ---------------------------------------------------------------------
def _redis_user(port: int) -> None:
    admin = redis.Redis(host="127.0.0.1", port=port)
    admin.acl_setuser(USER, enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], channels=["*"],
                      commands=["+@all"])
    admin.close()


def test_redis(server: Callable[[str], str], seen: Seen) -> None:
    url = server("redis")
    port = int(_address(url).rsplit(":", 1)[1])
    _redis_user(port)
    try:
        _exercise(seen, Target(_with_user(url, PASSWORD), [_with_user(url, WRONG)]))
    finally:
        redis.Redis(host="127.0.0.1", port=port).acl_deluser(USER)


def test_redis_sentinel_failover(seen: Seen) -> None:
    cluster = servers.start_cluster("redis_sentinel", size=3)
    try:
        for member in cluster.members[:2]:  # the primary and its replica (users are not replicated)
            _redis_user(member.port)
        sentinel = redis.Redis(host="127.0.0.1", port=cluster.members[2].port)
        sentinel.execute_command("ACL", "SETUSER", "default", "on", "resetpass", f">{SENTINEL_PASSWORD}", "+@all",
                                 "~*", "&*")
        sentinel.close()

        def failover() -> None:
            cluster.kill(cluster.leader(timeout=BOUND))

        good = f"{_with_user(cluster.url, PASSWORD)}?sentinel_password={SENTINEL_PASSWORD}"
        bad = [good.replace(PASSWORD, WRONG), good.replace(SENTINEL_PASSWORD, WRONG)]
        _exercise(seen, Target(good, bad, failover))
    finally:
        cluster.stop()


def test_zookeeper_leader_killed(seen: Seen) -> None:
    cluster = servers.start_cluster("zookeeper", size=3)
    try:
        leader = cluster.leader(timeout=BOUND)
        hosts = cluster.kind.url([leader] + [m for m in cluster.members if m is not leader])
        url = f"{hosts.rstrip('/')}/secrets-{MARK[:6]}"
        with moot.connect(_with_user(url, PASSWORD), timeout=10):
            pass  # the root is made, with ACLs for this identity: a wrong password is now refused
        _exercise(seen, Target(_with_user(url, PASSWORD), [_with_user(url, WRONG)], lambda: cluster.kill(leader)))
    finally:
        cluster.stop()


def _etcd_post(url: str, path: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
    request = urllib.request.Request(f"http://{_address(url).split(',')[0]}/v3/{path}", data=json.dumps(body).encode())
    if token is not None:
        request.add_header("Authorization", token)
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def test_etcd_leader_killed(seen: Seen) -> None:
    cluster = servers.start_cluster("etcd", size=3)
    try:
        leader = cluster.leader(timeout=BOUND)
        url = cluster.kind.url([leader] + [m for m in cluster.members if m is not leader])
        root_password = uuid.uuid4().hex

        def answers() -> bool:  # a cluster just formed may say 503 for a moment
            try:
                _etcd_post(url, "auth/user/get", {"name": "nobody"})
            except urllib.error.HTTPError as exc:
                return exc.code != 503
            return True

        wait_until(answers, what="etcd to take auth requests")
        for user, password in (("root", root_password), (USER, PASSWORD)):
            _etcd_post(url, "auth/user/add", {"name": user, "password": password})
            _etcd_post(url, "auth/user/grant", {"user": user, "role": "root"})
        _etcd_post(url, "auth/enable", {})
        _exercise(seen, Target(_with_user(url, PASSWORD), [_with_user(url, WRONG)], lambda: cluster.kill(leader),
                               secrets=lambda coord: [coord.backend._http._token or "no token"]))  # type: ignore[attr-defined]
    finally:
        cluster.stop()


def test_postgresql(seen: Seen) -> None:
    """A server of its own: the shared one trusts every login; this one asks
    for the password (scram-sha-256) of every user but its admin."""
    import psycopg
    from psycopg import sql

    cluster = servers.start_cluster("postgresql", size=1)
    try:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(USER),
                                                                            sql.Literal(PASSWORD)))
            admin.execute(sql.SQL("GRANT CREATE ON DATABASE postgres TO {}").format(sql.Identifier(USER)))
            hba = cluster.members[0].directory / "data" / "pg_hba.conf"
            hba.write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                           "host all all 127.0.0.1/32 scram-sha-256\n")
            admin.execute("SELECT pg_reload_conf()")
        _exercise(seen, Target(_with_user(cluster.url, PASSWORD), [_with_user(cluster.url, WRONG)]))
    finally:
        cluster.stop()


def test_mysql(server: Callable[[str], str], seen: Seen) -> None:
    url = server("mysql")
    host, port = _address(url).rsplit(":", 1)
    admin = pymysql.connect(host=host, port=int(port), user="root", autocommit=True)
    database = USER
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{database}`")
            cursor.execute(f"CREATE USER '{USER}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
            cursor.execute(f"GRANT ALL ON `{database}`.* TO '{USER}'@'%'")
        target = f"mysql://{host}:{port}/{database}"
        _exercise(seen, Target(_with_user(target, PASSWORD), [_with_user(target, WRONG)]))
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{USER}'@'%'")
            cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()


@pytest.fixture
def memcached_login(tmp_path: Path) -> Iterator[str]:
    """A memcached of the test's own that wants USER's login (-Y); its address."""
    with servers.memcached_with_login(tmp_path, USER, PASSWORD) as address:
        yield address


def test_memcached(memcached_login: str, seen: Seen) -> None:
    url = f"memcached://{memcached_login}"
    _exercise(seen, Target(_with_user(url, PASSWORD), [_with_user(url, WRONG), url]))  # and no login at all


@pytest.mark.parametrize("url", [
    f"redis+sentinel://127.0.0.1:1/moot?sentinel_password={SENTINEL_PASSWORD}",
    f"redis+sentinel://127.0.0.1:1/moot?ttl=5&sentinel_password={SENTINEL_PASSWORD}&timeout=1",
    f"redis+sentinel://127.0.0.1:1/moot?Sentinel_Password={SENTINEL_PASSWORD}",  # not an option: refused, unseen
    f"redis://127.0.0.1:1/0?password={SENTINEL_PASSWORD}",  # likewise
], ids=["sentinel_password", "among-options", "Sentinel_Password", "redis-password"])  # the secret differs per process
def test_a_secret_option_in_the_query_never_shows(url: str, seen: Seen) -> None:
    """No server: the URL's text, its parse and the refusal all hide the value."""
    parsed = parse_url(url)
    seen.add("parsed URL", f"{parsed!s} {parsed!r} {parsed.redacted()}")
    with pytest.raises(moot.MootError) as failed:
        moot.connect(url, timeout=1)
    seen.exception("connect", failed.value)
    assert "password=***" in parsed.redacted().lower()
