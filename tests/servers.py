"""Real servers for the test suite, started on 127.0.0.1 on free ports.

Every server runs as a child process of the caller, on free ports of
127.0.0.1, with its data and log in a fresh temporary directory that is
removed when it stops. Servers already running on the machine (a system
Redis on 6379, ...) are never used nor touched. Install the servers with
``scripts/install-deps.sh``; a kind whose server is missing raises
:class:`ServerError` (tests then fail, they are not skipped).

API (stdlib only)::

    from tests import servers

    urls = servers.start(["redis", "zookeeper", "etcd"])  # started in parallel
    # {"redis": "redis://127.0.0.1:P/0", "zookeeper": "zookeeper://127.0.0.1:P",
    #  "etcd": "etcd://127.0.0.1:P"}; a kind whose MOOT_TEST_<KIND>_URL is set
    # is not started: that URL is returned instead.
    servers.stop()                 # stops everything this process started

    servers.start_cluster("redis_aof", size=1)   # redis that fsyncs an append-only file
    servers.start_cluster("redis_sentinel", size=3)  # primary, replica, Sentinel (failover ~1 s)

    cluster = servers.start_cluster("etcd", size=3)    # or "zookeeper"
    cluster.url                    # "etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
    cluster.members                # [Member(kind, index, ports, directory, pid), ...]
    leader = cluster.leader(timeout=30)   # the member that is leader now
    cluster.kill(leader)           # SIGKILL by PID, waits until it is gone
    cluster.restart(leader)        # same ports and data; returns once it answers
    cluster.kind.url([leader])     # a URL naming only some members, in that order
    cluster.members_alive()        # the members still running
    cluster.stop()                 # stops all members, removes their data

Guarantees: ``start``/``start_cluster`` return only once every server
answers its own protocol (redis PING, ZooKeeper ``srvr`` showing a mode, etcd
``/health`` true), or raise :class:`ServerError` with the tail of the
server's log within the kind's startup bound. Stopping sends SIGTERM, then
SIGKILL after a bound, to the recorded PIDs only. Children started in a
test process also get SIGTERM from the kernel if the thread that started
them dies (``setpriv --pdeathsig``), so a killed test run leaves no server
behind; start servers from a long-lived thread (pytest's main thread).

Adding a server kind is one small subclass of :class:`Kind` (its argv and
config, its readiness probe, its URL) added to :data:`KINDS`.

Command line (state kept in ``.servers/state.json`` at the repo root)::

    python -m tests.servers start [KIND ...]   # prints export lines for the URLs
    python -m tests.servers status
    python -m tests.servers stop
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from tests.certs import Certificates, certificates

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
STATE_FILE = REPO / ".servers" / "state.json"
INSTALL_HINT = "run scripts/install-deps.sh (as root) to install the test servers"

#: Ports are drawn from below Linux's ephemeral range, so an outgoing
#: connection cannot take one between the check and the server's bind.
_PORT_RANGE = (20000, 32000)
_STOP_GRACE = 10.0
_DIR_PREFIX = "moot-server-"


class ServerError(RuntimeError):
    """A test server is missing, did not start, or does not answer."""


@dataclasses.dataclass
class Member:
    """One running server process."""

    kind: str
    index: int
    ports: tuple[int, ...]  # ports[0] is the client port
    directory: Path
    pid: int = 0
    argv: list[str] = dataclasses.field(default_factory=list, repr=False)
    process: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return self.ports[0]

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server and every process it forked (SIGSTOP freezes all of it)."""
        _signal(self, sig)

    def freeze(self, timeout: float = 5.0) -> None:
        """SIGSTOP the server, and return once every thread of it is stopped:
        kill() returns before a thread busy on another core has stopped, and
        such a thread may still answer a request sent meanwhile."""
        self.send(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for task in Path(f"/proc/{self.pid}/task").glob("*/stat"):
                with contextlib.suppress(OSError):
                    states.append(task.read_text().rsplit(")", 1)[1].split()[0])
            if states and all(state in ("T", "t") for state in states):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"{self.kind} (pid {self.pid}) did not stop: thread states {states}")
            time.sleep(0.001)

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def alive(self) -> bool:
        """True while the process runs (a zombie counts as dead)."""
        if self.process is not None:
            return self.process.poll() is None
        return _pid_alive(self.pid)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# Server kinds


class Kind(abc.ABC):
    """How to run, probe and address one kind of server."""

    name: ClassVar[str]
    #: ports each member needs; the first one is the client port
    ports_per_member: ClassVar[int] = 1
    #: bound on the time from launch to "answers", generous for 2 cores
    startup_timeout: ClassVar[float] = 30.0
    #: True when :meth:`argv` can build a multi-member cluster
    clusterable: ClassVar[bool] = False

    @abc.abstractmethod
    def missing(self) -> str | None:
        """What is not installed, or None when the server can run."""

    @abc.abstractmethod
    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        """The command for ``member``; write any config into its directory."""

    @abc.abstractmethod
    def ready(self, member: Member) -> bool:
        """True once the member answers its protocol (must not raise)."""

    @abc.abstractmethod
    def url(self, members: Sequence[Member]) -> str:
        """The moot URL naming all ``members``."""

    def is_leader(self, member: Member) -> bool:
        """True when ``member`` is the cluster's leader now (clusterable kinds; must not raise)."""
        raise ServerError(f"{self.name} has no leader")


def _hosts(members: Sequence[Member]) -> str:
    return ",".join(m.address for m in members)


class Redis(Kind):
    name = "redis"
    startup_timeout = 15.0

    def missing(self) -> str | None:
        return None if shutil.which("redis-server") else "redis-server"

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        return [
            "redis-server", "--port", str(member.port), "--bind", HOST,
            "--save", "", "--appendonly", "no", "--dir", str(member.directory),
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip

    def ready(self, member: Member) -> bool:
        return _tcp_exchange(member.port, b"PING\r\n", until=b"\r\n").startswith(b"+PONG")

    def url(self, members: Sequence[Member]) -> str:
        return f"redis://{_hosts(members)}/0"


class RedisAof(Redis):
    """Redis that keeps its data across a crash: append-only file, fsync'ed on every write."""

    name = "redis_aof"

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        return [
            "redis-server", "--port", str(member.port), "--bind", HOST,
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--dir", str(member.directory), "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip


class RedisSentinel(Kind):
    """A Redis primary (member 0), its replica (member 1) and one Sentinel
    (member 2) that fails over within about a second (quorum 1, down after
    500 ms). Nothing is persisted. ``leader()`` is the current primary; the
    URL is ``redis+sentinel://`` naming the Sentinel, service ``moot``."""

    name = "redis_sentinel"
    startup_timeout = 20.0
    clusterable = True
    service = "moot"

    def missing(self) -> str | None:
        return None if shutil.which("redis-server") else "redis-server"

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        if len(peers) != 3:
            raise ServerError("redis_sentinel runs as exactly 3 members: primary, replica, sentinel")
        primary = peers[0]
        if member.index == 2:
            config = member.directory / "sentinel.conf"  # Sentinel rewrites it: its own copy
            config.write_text("\n".join([
                f"port {member.port}", f"bind {HOST}", f"dir {member.directory}",
                f"sentinel monitor {self.service} {HOST} {primary.port} 1",
                f"sentinel down-after-milliseconds {self.service} 500",
                f"sentinel failover-timeout {self.service} 2000",
            ]) + "\n")
            return ["redis-server", str(config), "--sentinel"]
        argv = [
            "redis-server", "--port", str(member.port), "--bind", HOST,
            "--save", "", "--appendonly", "no", "--dir", str(member.directory),
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        if member.index == 1:
            argv += ["--replicaof", HOST, str(primary.port)]
        return argv

    def ready(self, member: Member) -> bool:
        if member.index == 2:  # the Sentinel knows the replica: a failover can happen
            reply = _tcp_exchange(member.port, f"SENTINEL REPLICAS {self.service}\r\nQUIT\r\n".encode())
            return b"slave" in reply
        if member.index == 1:
            return self.synced_replica(member)
        return _tcp_exchange(member.port, b"PING\r\n", until=b"\r\n").startswith(b"+PONG")

    def synced_replica(self, member: Member) -> bool:
        """True when ``member`` (0 or 1) is a replica whose link to the primary is up."""
        return b"master_link_status:up" in _tcp_exchange(member.port, b"INFO replication\r\nQUIT\r\n")

    def is_leader(self, member: Member) -> bool:
        return member.index != 2 and b"role:master" in _tcp_exchange(member.port, b"INFO replication\r\nQUIT\r\n")

    def url(self, members: Sequence[Member]) -> str:
        sentinels = [m for m in members if m.index == 2] or list(members)
        return f"redis+sentinel://{_hosts(sentinels)}/{self.service}"


class ZooKeeper(Kind):
    """ZooKeeper from Debian's jars, run with ``java`` directly.

    tickTime is 250 ms so sessions down to 500 ms are allowed (up to 60 s);
    all four-letter words are enabled; the admin server is off.
    """

    name = "zookeeper"
    ports_per_member = 3  # client, quorum, leader election
    startup_timeout = 60.0
    clusterable = True
    jars: ClassVar[tuple[str, ...]] = ("/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar")

    def missing(self) -> str | None:
        absent = [j for j in self.jars if not os.path.exists(j)]
        if not shutil.which("java"):
            absent.append("java")
        return ", ".join(absent) or None

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        data = member.directory / "data"
        data.mkdir(exist_ok=True)
        lines = [
            "tickTime=250",
            "initLimit=40",
            "syncLimit=20",
            "minSessionTimeout=500",
            "maxSessionTimeout=60000",
            f"dataDir={data}",
            f"clientPort={member.port}",
            f"clientPortAddress={HOST}",
            "maxClientCnxns=0",
            "4lw.commands.whitelist=*",
            "admin.enableServer=false",
        ]
        if len(peers) > 1:
            (data / "myid").write_text(f"{member.index + 1}\n")
            lines += [f"server.{p.index + 1}={HOST}:{p.ports[1]}:{p.ports[2]}" for p in peers]
        config = member.directory / "zoo.cfg"
        config.write_text("\n".join(lines) + "\n")
        return [
            "java", "-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true", "-Dzookeeper.forceSync=no",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
            "-cp", ":".join(self.jars),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(config),
        ]  # fmt: skip

    def ready(self, member: Member) -> bool:
        return b"Mode: " in _tcp_exchange(member.port, b"srvr")

    def is_leader(self, member: Member) -> bool:
        return b"Mode: leader" in _tcp_exchange(member.port, b"srvr")

    def url(self, members: Sequence[Member]) -> str:
        return f"zookeeper://{_hosts(members)}"


class ZooKeeperTLS(ZooKeeper):
    """ZooKeeper that serves clients over TLS only: Netty's secure client port
    (``ports[0]``, no plain client port) with the certificates of
    :func:`tls_certificates` as PEM key and trust stores. ``server_cert`` as
    for :class:`EtcdTLS`; ``client_auth`` is ZooKeeper's ``ssl.clientAuth``
    (none, want, need). The URL names the secure port with ``tls=true`` and
    the test authority as ``ca_cert``."""

    clusterable = False
    #: Debian's zookeeper.jar leaves out part of what Netty's TLS needs
    jars = (*ZooKeeper.jars, "/usr/share/java/netty-codec.jar", "/usr/share/java/netty-resolver.jar",
            "/usr/share/java/netty-transport-native-unix-common.jar")

    def __init__(self, name: str, server_cert: str = "server", client_auth: str = "none"):
        self.name = name  # type: ignore[misc]  # one class, several named kinds
        self.server_cert = server_cert
        self.client_auth = client_auth

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        cert, key = _server_files(self.server_cert)
        store = member.directory / "server.pem"  # a PEM key store holds the key and its certificate
        store.write_text(key.read_text() + cert.read_text())
        argv = super().argv(member, peers)
        config = member.directory / "zoo.cfg"
        lines = [line for line in config.read_text().splitlines() if not line.startswith("clientPort")]
        lines += [
            "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
            f"secureClientPort={member.port}",
            f"secureClientPortAddress={HOST}",
            f"ssl.keyStore.location={store}",
            "ssl.keyStore.type=PEM",
            f"ssl.trustStore.location={tls_certificates().ca}",
            "ssl.trustStore.type=PEM",
            f"ssl.clientAuth={self.client_auth}",
            "ssl.hostnameVerification=false",  # client certificates name no host
        ]
        config.write_text("\n".join(lines) + "\n")
        return argv

    def ready(self, member: Member) -> bool:
        return b"Mode: " in _tls_exchange(member.port, b"srvr", until=b"Node count")

    def is_leader(self, member: Member) -> bool:
        return b"Mode: leader" in _tls_exchange(member.port, b"srvr", until=b"Node count")

    def url(self, members: Sequence[Member]) -> str:
        return super().url(members) + _query({"tls": "true", "ca_cert": str(tls_certificates().ca)})


class Etcd(Kind):
    name = "etcd"
    ports_per_member = 2  # client, peer
    startup_timeout = 30.0
    clusterable = True

    def missing(self) -> str | None:
        return None if shutil.which("etcd") else "etcd"

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        client = f"http://{HOST}:{member.port}"
        peer = f"http://{HOST}:{member.ports[1]}"
        cluster = ",".join(f"m{p.index}=http://{HOST}:{p.ports[1]}" for p in peers)
        token = f"moot-{peers[0].ports[1]}-{os.getpid()}"
        return [
            "etcd", "--name", f"m{member.index}",
            "--data-dir", str(member.directory / "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", token,
            # Short elections: 1 s leases are real, and a killed leader is replaced fast.
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr",
        ]  # fmt: skip

    def ready(self, member: Member) -> bool:
        health = _http_json(f"http://{member.address}/health")
        return health is not None and health.get("health") == "true"

    def is_leader(self, member: Member) -> bool:
        status = _http_json(f"http://{member.address}/v3/maintenance/status", body={}) or {}
        header = status.get("header")
        return isinstance(header, dict) and status.get("leader") == header.get("member_id") is not None

    def url(self, members: Sequence[Member]) -> str:
        return f"etcd://{_hosts(members)}"


def _run_quietly(argv: list[str], timeout: float = 5.0) -> bool:
    """True if ``argv`` exits 0 within ``timeout`` (never raises)."""
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps each major apart)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class PostgreSQL(Kind):
    """PostgreSQL with its production durability defaults (fsync, synchronous
    commit, full-page writes all on). The cluster is made by ``initdb`` on
    first start (kept on restart), with trust authentication on 127.0.0.1
    only; PostgreSQL refuses to run as root, so under root it runs as the
    ``postgres`` user that Debian's package creates."""

    name = "postgresql"
    startup_timeout = 60.0

    def missing(self) -> str | None:
        return None if _postgres_bin() else "postgresql (/usr/lib/postgresql/*/bin/postgres)"

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        bindir = _postgres_bin()
        data = member.directory / "data"
        script = (
            f'test -d {data} || {bindir}/initdb -D {data} -U postgres --auth=trust --encoding=UTF8 '
            f'--locale=C >/dev/null || exit 1; '
            f'exec {bindir}/postgres -D {data} -p {member.port} -c listen_addresses={HOST} '
            f'-c unix_socket_directories={member.directory} -c max_connections=2200 '
            f"-c log_min_messages=warning"
        )
        argv = ["sh", "-c", script]
        if os.geteuid() == 0:
            shutil.chown(member.directory, "postgres", "postgres")
            argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups",
                    "--pdeathsig", "TERM", "--", *argv]
        return argv

    def ready(self, member: Member) -> bool:
        bindir = _postgres_bin()
        return bindir is not None and _run_quietly(
            [str(bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(member.port), "-U", "postgres"])

    def url(self, members: Sequence[Member]) -> str:
        return f"postgresql://postgres@{_hosts(members)}/postgres"


class MariaDB(Kind):
    """MariaDB with its production durability defaults (InnoDB flushes its log
    on every commit). ``mariadb-install-db`` makes the data directory on
    first start; root has no password and reaches it over 127.0.0.1 only;
    the tests use the database ``moot``, created once the server answers."""

    name = "mysql"
    startup_timeout = 60.0
    database = "moot"

    def missing(self) -> str | None:
        absent = [c for c in ("mariadbd", "mariadb-install-db", "mariadb") if not shutil.which(c)]
        return ", ".join(absent) or None

    def server_argv(self, member: Member) -> list[str]:
        data = member.directory / "data"
        return [
            "mariadbd", "--no-defaults", f"--datadir={data}", f"--port={member.port}",
            f"--bind-address={HOST}", f"--socket={member.directory / 'mysqld.sock'}",
            f"--pid-file={member.directory / 'mysqld.pid'}", "--user=root",
            "--max-connections=3000",
        ]  # fmt: skip

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        server = " ".join(self.server_argv(member))
        return ["sh", "-c", f"{self.install(member)}; exec {server}"]

    def install(self, member: Member) -> str:
        """Shell that makes the data directory unless it exists; on failure it
        prints the installer's output to the server log and exits."""
        # A temporary directory of its own: with the shared /tmp, one of three
        # installs run at once failed about 1 start in 10 ("Could not remove
        # temporary table '/tmp/#sql-temptable-...'", then "Unknown table").
        data, tmp = member.directory / "data", member.directory / "tmp"
        install = (f"mariadb-install-db --no-defaults --datadir={data} --user=root "
                   "--auth-root-authentication-method=normal --skip-test-db > install.log 2>&1")
        return (f"mkdir -p {tmp} && chmod 1777 {tmp} && export TMPDIR={tmp} && "
                f"{{ test -d {data}/mysql || {install} || {{ cat install.log; exit 1; }} }}")

    def client(self, member: Member, sql: str) -> bool:
        return _run_quietly(["mariadb", "--no-defaults", "--protocol=tcp", "-h", HOST, "-P", str(member.port),
                             "-u", "root", "-e", sql])

    def ready(self, member: Member) -> bool:
        return self.client(member, f"CREATE DATABASE IF NOT EXISTS {self.database}")

    def url(self, members: Sequence[Member]) -> str:
        return f"mysql://root@{_hosts(members)}/{self.database}"


class Galera(MariaDB):
    """A MariaDB Galera cluster (Debian's galera-4): every member a primary,
    group communication, IST and rsync SST on ports of 127.0.0.1 of its own;
    member 0 bootstraps the cluster on its first start (a restart of it joins
    the others), the others join it. Failure detection is cut to seconds."""

    name = "galera"
    ports_per_member = 4  # client, group communication, IST, SST
    startup_timeout = 120.0
    clusterable = True
    provider = "/usr/lib/galera/libgalera_smm.so"

    def missing(self) -> str | None:
        absent = [c for c in ("rsync", "wsrep_sst_rsync") if not shutil.which(c)]
        if not os.path.exists(self.provider):
            absent.append(self.provider)
        return super().missing() or ", ".join(absent) or None

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        _, group, ist, sst = member.ports
        options = ";".join([
            f"base_port={group}", f"gmcast.listen_addr=tcp://{HOST}:{group}", f"ist.recv_addr={HOST}:{ist}",
            "evs.keepalive_period=PT0.5S", "evs.suspect_timeout=PT1.5S", "evs.inactive_timeout=PT3S",
            "evs.inactive_check_period=PT0.5S", "evs.install_timeout=PT3S",
        ])
        cluster = ",".join(f"{HOST}:{p.ports[1]}" for p in peers)
        wsrep = [
            "--wsrep_on=ON", f"--wsrep_provider={self.provider}", f"'--wsrep_provider_options={options}'",
            f"--wsrep_cluster_address=gcomm://{cluster}", f"--wsrep_cluster_name=moot-{peers[0].ports[1]}",
            f"--wsrep_node_name=n{member.index}", f"--wsrep_node_address={HOST}:{group}",
            f"--wsrep_sst_receive_address={HOST}:{sst}", "--wsrep_sst_method=rsync", "--binlog_format=ROW",
            "--innodb_autoinc_lock_mode=2", "--innodb_buffer_pool_size=64M",
        ]  # fmt: skip
        data = member.directory / "data"
        server = " ".join(self.server_argv(member) + wsrep)
        mark = member.directory / "bootstrapped"  # member 0 bootstraps on its first start only
        first = f"B=; test {member.index} = 0 && ! test -f {mark} && B=--wsrep-new-cluster; touch {mark}; "
        # rsync's SST daemon, started by root, writes as nobody: the joiner's data must be writable to it
        share = f"chmod 755 {member.directory}; chmod -R a+rwX {data}; "
        return ["sh", "-c", f"{self.install(member)}; {share}{first}exec {server} $B"]

    def ready(self, member: Member) -> bool:
        return self.client(member, f"CREATE DATABASE IF NOT EXISTS {self.database}")


class Memcached(Kind):
    """memcached as ``docs/backends.md`` asks operators to run it for moot:
    ``-M`` (refuse to store rather than evict), 64 MiB, TCP on 127.0.0.1 only."""

    name = "memcached"
    startup_timeout = 15.0

    def missing(self) -> str | None:
        return None if shutil.which("memcached") else "memcached"

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        argv = ["memcached", "-l", HOST, "-p", str(member.port), "-U", "0", "-M", "-m", "64", "-c", "4096"]
        return argv + (["-u", "root"] if os.geteuid() == 0 else [])

    def ready(self, member: Member) -> bool:
        return _tcp_exchange(member.port, b"version\r\n", until=b"\r\n").startswith(b"VERSION")

    def url(self, members: Sequence[Member]) -> str:
        return f"memcached://{_hosts(members)}"


#: every kind of server this module can run, by name
KINDS: dict[str, Kind] = {k.name: k for k in (Redis(), RedisAof(), RedisSentinel(), ZooKeeper(),
                                              ZooKeeperTLS("zookeeper_tls"),
                                              ZooKeeperTLS("zookeeper_tls_wrong_host", server_cert="wrong_host"),
                                              ZooKeeperTLS("zookeeper_tls_client_auth", client_auth="need"), Etcd(),
                                              PostgreSQL(), MariaDB(), Galera(), Memcached())}
#: what ``python -m tests.servers start`` starts when no kind is named
DEFAULT_KINDS = ("redis", "zookeeper", "etcd")


# --------------------------------------------------------------------------
# Probes (never raise: a server that does not answer yet is "not ready")


def _tcp_exchange(port: int, request: bytes, until: bytes | None = None) -> bytes:
    """Send ``request``; return what the server answers before closing (or ``until``)."""
    reply = b""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            sock.sendall(request)
            while chunk := sock.recv(4096):
                reply += chunk
                if until is not None and until in reply:
                    break
    except OSError:
        pass
    return reply


_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via $http_proxy


def _http_json(url: str, body: dict[str, object] | None = None,
               context: ssl.SSLContext | None = None) -> dict[str, object] | None:
    data = None if body is None else json.dumps(body).encode()
    opener = _HTTP if context is None else urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, data=data, timeout=2.0) as response:
            parsed = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


# --------------------------------------------------------------------------
# TLS variants of etcd, PostgreSQL, MariaDB and memcached: the test
# certificates of tests/certs.py, made once per process, on every server.

_tls_dir: Path | None = None
_tls_lock = threading.Lock()


def tls_certificates() -> Certificates:
    """The certificates every TLS server of these kinds uses (made on first
    use; removed at exit, or by the next run's sweep if this one is killed)."""
    global _tls_dir
    with _tls_lock:
        if _tls_dir is None:
            directory = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}tls-"))
            _write_pids(directory, os.getpid())
            atexit.register(shutil.rmtree, directory, True)
            _tls_dir = directory
        return certificates(_tls_dir)


def _server_files(server_cert: str) -> tuple[Path, Path]:
    """The certificate and key of a TLS variant: ``"server"`` names 127.0.0.1
    and localhost, ``"wrong_host"`` only another host."""
    made = tls_certificates()
    if server_cert == "wrong_host":
        return made.wrong_host_cert, made.wrong_host_key
    return made.server_cert, made.server_key


def _tls_probe_context() -> ssl.SSLContext:
    """A context for readiness probes: trusts the test authority, shows the
    client certificate, and checks no host name (the wrong-host variants are
    probed all the same)."""
    made = tls_certificates()
    context = ssl.create_default_context(cafile=made.ca)
    context.check_hostname = False
    context.load_cert_chain(made.client_cert, made.client_key)
    return context


def _tls_exchange(port: int, request: bytes, until: bytes) -> bytes:
    """:func:`_tcp_exchange` over TLS."""
    reply = b""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as raw, \
                _tls_probe_context().wrap_socket(raw, server_hostname=HOST) as sock:
            sock.sendall(request)
            while chunk := sock.recv(4096):
                reply += chunk
                if until in reply:
                    break
    except OSError:
        pass
    return reply


def _query(options: dict[str, str]) -> str:
    return "?" + "&".join(f"{name}={value}" for name, value in options.items())


class EtcdTLS(Etcd):
    """etcd serving clients over TLS only (``https``; peers stay plain), with
    :func:`tls_certificates`. ``server_cert``: ``"server"`` or ``"wrong_host"``;
    ``client_auth``: etcd's ``--client-cert-auth`` (every client must show a
    certificate signed by the test authority). The URL is ``etcd3+https://``
    with ``ca_cert`` (and the client's ``cert`` and ``key`` when required)."""

    clusterable = False

    def __init__(self, name: str, server_cert: str = "server", client_auth: bool = False):
        self.name = name  # type: ignore[misc]  # one class, several named kinds
        self.server_cert = server_cert
        self.client_auth = client_auth

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        cert, key = _server_files(self.server_cert)
        plain = f"http://{HOST}:{member.port}"
        argv = [f"https://{HOST}:{member.port}" if arg == plain else arg for arg in super().argv(member, peers)]
        argv += ["--cert-file", str(cert), "--key-file", str(key), "--trusted-ca-file", str(tls_certificates().ca)]
        return argv + (["--client-cert-auth"] if self.client_auth else [])

    def ready(self, member: Member) -> bool:
        health = _http_json(f"https://{member.address}/health", context=_tls_probe_context())
        return health is not None and health.get("health") == "true"

    def is_leader(self, member: Member) -> bool:
        return True  # one member

    def url(self, members: Sequence[Member]) -> str:
        made = tls_certificates()
        options = {"ca_cert": str(made.ca)}
        if self.client_auth:
            options.update(cert=str(made.client_cert), key=str(made.client_key))
        return f"etcd3+https://{_hosts(members)}{_query(options)}"


class PostgreSQLTLS(PostgreSQL):
    """PostgreSQL that takes TLS connections only (``ssl=on``; pg_hba.conf
    has ``hostssl`` lines only): the role ``moot-client`` (a superuser, made
    once the server answers) must show a client certificate naming it
    (``clientcert=verify-full``); ``postgres`` is trusted without one.
    ``server_cert`` as for :class:`EtcdTLS`. The URL is ``postgres``'s with
    ``tls=true`` and ``ca_cert``."""

    client_role = "moot-client"  # the CN of the test client certificate

    def __init__(self, name: str, server_cert: str = "server"):
        self.name = name  # type: ignore[misc]
        self.server_cert = server_cert

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        argv = super().argv(member, peers)
        cert, key = _server_files(self.server_cert)
        files = {"server.crt": cert, "server.key": key, "ca.crt": tls_certificates().ca}
        (member.directory / "pg_hba.conf").write_text(
            f"hostssl all {self.client_role} {HOST}/32 trust clientcert=verify-full\n"
            f"hostssl all all {HOST}/32 trust\n")
        for name in [*files, "pg_hba.conf"]:  # the server reads them as itself; the key must be 0600
            path = member.directory / name
            if name in files:
                shutil.copyfile(files[name], path)
            path.chmod(0o600)
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        d = member.directory
        argv[-1] += (f" -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key "
                     f"-c ssl_ca_file={d}/ca.crt -c hba_file={d}/pg_hba.conf")
        return argv

    def ready(self, member: Member) -> bool:
        bindir = _postgres_bin()
        role = self.client_role
        make_role = (f"DO $$ BEGIN CREATE ROLE \"{role}\" LOGIN SUPERUSER; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        conninfo = (f"host={HOST} port={member.port} user=postgres dbname=postgres sslmode=verify-ca "
                    f"sslrootcert={tls_certificates().ca}")
        return super().ready(member) and bindir is not None and _run_quietly(
            [str(bindir / "psql"), "-qAt", "-d", conninfo, "-c", make_role])

    def url(self, members: Sequence[Member]) -> str:
        return super().url(members) + _query({"tls": "true", "ca_cert": str(tls_certificates().ca)})


class MariaDBTLS(MariaDB):
    """MariaDB with TLS (``--ssl-cert``, ``--ssl-key``, ``--ssl-ca``): root
    may connect with or without it; the user ``moot_x509`` (no password,
    all privileges on the database ``moot``) must show a client certificate
    signed by the test authority (``REQUIRE X509``). ``server_cert`` as for
    :class:`EtcdTLS`. The URL is root's with ``tls=true`` and ``ca_cert``."""

    client_user = "moot_x509"

    def __init__(self, name: str, server_cert: str = "server"):
        self.name = name  # type: ignore[misc]
        self.server_cert = server_cert

    def server_argv(self, member: Member) -> list[str]:
        cert, key = _server_files(self.server_cert)
        return [*super().server_argv(member), f"--ssl-cert={cert}", f"--ssl-key={key}",
                f"--ssl-ca={tls_certificates().ca}"]

    def ready(self, member: Member) -> bool:
        user = f"'{self.client_user}'@'%'"
        return self.client(member, f"CREATE DATABASE IF NOT EXISTS {self.database}; "
                                   f"CREATE USER IF NOT EXISTS {user} REQUIRE X509; "
                                   f"GRANT ALL ON {self.database}.* TO {user}")

    def url(self, members: Sequence[Member]) -> str:
        return super().url(members) + _query({"tls": "true", "ca_cert": str(tls_certificates().ca)})


class MemcachedTLS(Memcached):
    """memcached built with TLS (Debian's is) serving it on its port (``-Z``),
    with :func:`tls_certificates`. ``server_cert`` as for :class:`EtcdTLS`;
    ``client_auth``: ``ssl_verify_mode=2`` (a client certificate signed by
    the test authority is required). The URL has ``tls=true`` and
    ``ca_cert`` (and the client's ``cert`` and ``key`` when required)."""

    def __init__(self, name: str, server_cert: str = "server", client_auth: bool = False):
        self.name = name  # type: ignore[misc]
        self.server_cert = server_cert
        self.client_auth = client_auth

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        cert, key = _server_files(self.server_cert)
        settings = f"ssl_chain_cert={cert},ssl_key={key},ssl_ca_cert={tls_certificates().ca}," \
                   f"ssl_verify_mode={2 if self.client_auth else 0}"
        return [*super().argv(member, peers), "-Z", "-o", settings]

    def ready(self, member: Member) -> bool:
        return _tls_exchange(member.port, b"version\r\n", until=b"\r\n").startswith(b"VERSION")

    def url(self, members: Sequence[Member]) -> str:
        made = tls_certificates()
        options = {"tls": "true", "ca_cert": str(made.ca)}
        if self.client_auth:
            options.update(cert=str(made.client_cert), key=str(made.client_key))
        return super().url(members) + _query(options)


KINDS.update({k.name: k for k in (
    EtcdTLS("etcd_tls", client_auth=True), EtcdTLS("etcd_tls_wrong_host", server_cert="wrong_host"),
    PostgreSQLTLS("postgresql_tls"), PostgreSQLTLS("postgresql_tls_wrong_host", server_cert="wrong_host"),
    MariaDBTLS("mysql_tls"), MariaDBTLS("mysql_tls_wrong_host", server_cert="wrong_host"),
    MemcachedTLS("memcached_tls", client_auth=True),
    MemcachedTLS("memcached_tls_wrong_host", server_cert="wrong_host"),
)})


# --------------------------------------------------------------------------
# Production settings, for the benchmark: each engine's durability and timing
# defaults, where the kinds above trade them for a fast test suite.


class RedisShipped(Redis):
    """Redis as shipped: RDB snapshots on redis.conf's default schedule (3600 s
    after 1 change, 300 s after 100, 60 s after 10,000), no append-only file."""

    name = "redis_production"

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        argv = super().argv(member, peers)
        at = argv.index("--save")
        argv[at:at + 2] = ["--save", "3600 1 300 100 60 10000"]
        return argv


class ZooKeeperProduction(ZooKeeper):
    """ZooKeeper with its defaults: every transaction fsync'ed before it is
    acknowledged (forceSync=yes) and tickTime 2000 ms (sessions of 4 to 40 s)."""

    name = "zookeeper_production"
    clusterable = False

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        argv = [arg for arg in super().argv(member, peers) if arg != "-Dzookeeper.forceSync=no"]
        config = member.directory / "zoo.cfg"
        lines = [line for line in config.read_text().splitlines()
                 if not line.startswith(("tickTime=", "minSessionTimeout=", "maxSessionTimeout="))]
        config.write_text("\n".join(["tickTime=2000", *lines]) + "\n")
        return argv


class EtcdProduction(Etcd):
    """etcd with its default raft timing (heartbeat 100 ms, election 1000 ms);
    etcd always fsyncs its write-ahead log before it acknowledges a write."""

    name = "etcd_production"
    clusterable = False

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        argv = super().argv(member, peers)
        for flag in ("--heartbeat-interval", "--election-timeout"):
            at = argv.index(flag)
            del argv[at:at + 2]
        return argv


class PostgreSQLCounted(PostgreSQL):
    """:class:`PostgreSQL` (already on its durability defaults) with
    pg_stat_statements loaded, so the benchmark can count the statements
    each operation costs. The extension is created on first use by the
    counter, in the database the URL names."""

    name = "postgresql_production"

    def argv(self, member: Member, peers: Sequence[Member]) -> list[str]:
        argv = super().argv(member, peers)
        argv[-1] += " -c shared_preload_libraries=pg_stat_statements"
        return argv


#: The kind the benchmark runs for each backend: production settings.
PRODUCTION = {"redis": "redis_production", "zookeeper": "zookeeper_production", "etcd": "etcd_production",
              "postgresql": "postgresql_production", "mysql": "mysql", "memcached": "memcached"}

KINDS.update({k.name: k for k in (RedisShipped(), ZooKeeperProduction(), EtcdProduction(), PostgreSQLCounted())})


# --------------------------------------------------------------------------
# Processes


_lock = threading.Lock()
_given_ports: set[int] = set()
_running: list[Cluster] = []


def _port_range() -> tuple[int, int]:
    """This process's share of :data:`_PORT_RANGE`: each of pytest-xdist's test processes (``make test``
    runs two) draws from its own slice, so that a port one of them leaves free for a moment (a server it
    restarts on the same port) is never taken by another."""
    low, high = _PORT_RANGE
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return low, high
    size = (high - low) // count
    low += int(worker[2:]) * size
    return low, low + size


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports of 127.0.0.1 that nothing listens on now."""
    ports: list[int] = []
    low, high = _port_range()
    while len(ports) < count:
        port = random.randrange(low, high)
        if port in _given_ports:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        _given_ports.add(port)
        ports.append(port)
    return ports


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # never signal a process group by accident
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of another process still "exists"
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def _signal(member: Member, sig: signal.Signals) -> None:
    """Signal the member's whole process group: a server that forks workers
    (PostgreSQL's backends) is killed or frozen as a whole, as a crashed or
    hung machine would be. Each member leads its own group (``_spawn``)."""
    if member.process is not None and member.process.poll() is not None:
        return
    if not _pid_alive(member.pid):
        return
    try:
        leads_group = os.getpgid(member.pid) == member.pid
    except ProcessLookupError:
        return
    if leads_group:
        os.killpg(member.pid, sig)
    else:
        os.kill(member.pid, sig)


def _wait_gone(member: Member, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while member.alive():
        if time.monotonic() > deadline:
            return False
        if member.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.process.wait(0.1)
        else:
            time.sleep(0.05)
    return True


def _stop_members(members: Iterable[Member]) -> None:
    """One at a time (a cluster told to stop all at once stalls: etcd waits seconds
    to hand over leadership), SIGTERM, then SIGKILL after the grace period; remove data."""
    for member in members:
        _signal(member, signal.SIGTERM)
        if not _wait_gone(member, _STOP_GRACE):
            _signal(member, signal.SIGKILL)
            _wait_gone(member, _STOP_GRACE)
        # What outlived the group's leader (mariadb-install-db's bootstrap server)
        # would write on into a directory being removed. A group's id is never
        # a new process's pid while any member of it lives, so this kills ours only.
        if member.pid > 0:  # killpg(0) would be our own group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(member.pid, signal.SIGKILL)
        for _ in range(50):
            shutil.rmtree(member.directory, ignore_errors=True)
            if not member.directory.exists():
                break
            time.sleep(0.1)


@dataclasses.dataclass(eq=False)
class Cluster:
    """Servers of one kind started together (one member for a plain server)."""

    kind: Kind
    members: list[Member]
    detached: bool = False

    @property
    def url(self) -> str:
        """The moot URL naming every member (alive or not)."""
        return self.kind.url(self.members)

    def members_alive(self) -> list[Member]:
        return [m for m in self.members if m.alive()]

    def leader(self, timeout: float = 30.0) -> Member:
        """The member that says it is leader, waiting up to ``timeout`` for one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members_alive():
                if self.kind.is_leader(member):
                    return member
            time.sleep(0.1)
        raise ServerError(f"no {self.kind.name} leader within {timeout} s")

    def kill(self, member: Member, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL: a crash) to ``member`` and wait until it is gone."""
        _signal(member, sig)
        if not _wait_gone(member, _STOP_GRACE):
            raise ServerError(f"{member.kind} member {member.index} (pid {member.pid}) survived {sig.name}")

    def restart(self, member: Member) -> None:
        """Start a killed member again, on its ports and data; return once it answers."""
        if member.alive():
            raise ServerError(f"{member.kind} member {member.index} is still running")
        _spawn(member, self.detached)
        if _wait_ready([Cluster(self.kind, [member], self.detached)]):
            raise ServerError(f"{member.kind} member {member.index} could not bind its ports again")

    def stop(self) -> None:
        """Stop every member (resumed first if a test froze it) and remove its data (idempotent)."""
        for member in self.members:
            member.send(signal.SIGCONT)
        _stop_members(self.members)
        with _lock:
            if self in _running:
                _running.remove(self)


def _launch(kind: Kind, size: int, detach: bool) -> Cluster:
    """Spawn the processes of one cluster; does not wait for them."""
    members = [
        Member(kind.name, i, tuple(_free_ports(kind.ports_per_member)),
               Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{kind.name}-")))
        for i in range(size)
    ]  # fmt: skip
    cluster = Cluster(kind, members, detach)
    for member in members:
        member.argv = kind.argv(member, members)
        _spawn(member, detach)
    return cluster


def _spawn(member: Member, detach: bool) -> None:
    argv = member.argv
    if not detach and shutil.which("setpriv"):
        argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
    with open(member.log, "ab") as log:
        member.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=member.directory, start_new_session=True,
        )  # fmt: skip
    member.pid = member.process.pid
    _write_pids(member.directory, member.pid, os.getpid())  # server, owner


def _write_pids(directory: Path, *pids: int) -> None:
    """Record the processes a server directory belongs to, for :func:`_sweep_stale_dirs`: written
    whole and then renamed, so that another test process sweeping at that moment (``make test`` runs
    two) never reads an empty file and takes a live server's directory for a dead one's."""
    partial = directory / "pids.partial"
    partial.write_text(" ".join(map(str, pids)) + "\n")
    os.replace(partial, directory / "pids")


def _sweep_stale_dirs() -> None:
    """Remove the data of servers left behind by a killed run: dirs whose server
    and owning process are both gone (a member killed by a live test is kept)."""
    for directory in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            pids = [int(pid) for pid in (directory / "pids").read_text().split()]
        except (OSError, ValueError):
            continue  # being created right now, or not ours
        if pids and not any(_pid_alive(pid) for pid in pids):
            shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(clusters: Sequence[Cluster]) -> list[Cluster]:
    """Wait until every member answers; return the clusters that must be retried
    because a member could not bind its port. Raises ServerError on any other failure."""
    start = time.monotonic()
    pending = {id(m): (c, m) for c in clusters for m in c.members}
    retry: list[Cluster] = []
    while pending:
        for key, (cluster, member) in list(pending.items()):
            # alive before and after the probe: never mistake another server on the port for ours
            if cluster in retry or (member.alive() and cluster.kind.ready(member) and member.alive()):
                del pending[key]
            elif not member.alive():
                tail = member.log_tail()
                if any(s in tail.lower() for s in ("address already in use", "bindexception")):
                    retry.append(cluster)
                    del pending[key]
                    continue
                raise ServerError(f"{member.kind} member {member.index} exited while starting; its log ends:\n{tail}")
            elif time.monotonic() - start > cluster.kind.startup_timeout:
                raise ServerError(
                    f"{member.kind} on port {member.port} did not answer within "
                    f"{cluster.kind.startup_timeout:.0f} s; its log ends:\n{member.log_tail()}"
                )
        time.sleep(0.05)
    return retry


def _start(requests: Sequence[tuple[str, int]], detach: bool = False) -> list[Cluster]:
    """Start clusters (kind name, size) in parallel; all answer, or none is left running."""
    kinds = []
    for name, size in requests:
        if name not in KINDS:
            raise ServerError(f"unknown server kind {name!r}; known: {', '.join(KINDS)}")
        kind = KINDS[name]
        if size > 1 and not kind.clusterable:
            raise ServerError(f"{name} cannot run as a {size}-member cluster here")
        if (absent := kind.missing()) is not None:
            raise ServerError(f"{name} server not installed (missing {absent}); {INSTALL_HINT}")
        kinds.append((kind, size))
    _sweep_stale_dirs()
    clusters: list[Cluster] = []
    try:
        for _ in range(3):
            with _lock:
                launched = [_launch(kind, size, detach) for kind, size in kinds]
                clusters += launched
            retry = _wait_ready(launched)
            if not retry:
                break
            _stop_members(m for c in retry for m in c.members)
            clusters = [c for c in clusters if c not in retry]
            kinds = [(c.kind, len(c.members)) for c in retry]
        else:
            raise ServerError(f"could not find free ports for {[k.name for k, _ in kinds]}")
    except BaseException:
        _stop_members(m for c in clusters for m in c.members)
        raise
    if not detach:
        with _lock:
            _running.extend(clusters)
    return clusters


def start(kinds: Iterable[str]) -> dict[str, str]:
    """Start one server of each kind (in parallel); return {kind: URL}.

    A kind whose environment variable ``MOOT_TEST_<KIND>_URL`` is set is not
    started; that URL is returned for it.
    """
    urls: dict[str, str] = {}
    wanted: list[tuple[str, int]] = []
    for name in dict.fromkeys(kinds):
        given = os.environ.get(f"MOOT_TEST_{name.upper()}_URL")
        if given:
            urls[name] = given
        else:
            wanted.append((name, 1))
    for cluster in _start(wanted):
        urls[cluster.kind.name] = cluster.url
    return urls


@contextlib.contextmanager
def memcached_with_login(directory: Path, user: str, password: str) -> Iterator[str]:
    """A memcached of the caller's own that wants ``user``'s login (``-Y``),
    on a free port; yields its address once it listens, kills it after."""
    authfile = directory / "memcached-auth"
    authfile.write_text(f"{user}:{password}\n")
    (port,) = _free_ports(1)
    root = ["-u", "root"] if os.geteuid() == 0 else []
    process = subprocess.Popen(["memcached", "-l", HOST, "-p", str(port), "-U", "0", "-Y", str(authfile), *root],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + Memcached.startup_timeout
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise ServerError(f"memcached -Y did not listen on {HOST}:{port}") from None
                time.sleep(0.02)
        yield f"{HOST}:{port}"
    finally:
        process.kill()
        process.wait()


def start_production(kinds: Iterable[str]) -> dict[str, str]:
    """Like :func:`start`, on each engine's production settings
    (:data:`PRODUCTION`); returns {kind: URL} under the kinds' plain names."""
    wanted = list(dict.fromkeys(kinds))
    started = start(PRODUCTION[kind] for kind in wanted)
    return {kind: started[PRODUCTION[kind]] for kind in wanted}


def start_cluster(kind: str, size: int = 3) -> Cluster:
    """Start a ``size``-member cluster of ``kind`` ("etcd", "zookeeper", or
    "redis_sentinel" with size 3); any kind with size 1."""
    return _start([(kind, size)])[0]


@contextlib.contextmanager
def own_cluster(kind: str | Kind, size: int = 1) -> Iterator[Cluster]:
    """A cluster of the caller's own (one a test may freeze, kill or
    reconfigure), stopped on exit. ``kind`` is a kind's name, or a Kind of
    the caller's (a standard one configured otherwise), known by its name
    only while the cluster starts."""
    if isinstance(kind, Kind):
        standard = KINDS.get(kind.name)
        KINDS[kind.name] = kind
        try:
            cluster = start_cluster(kind.name, size)
        finally:
            if standard is None:
                del KINDS[kind.name]
            else:
                KINDS[kind.name] = standard
    else:
        cluster = start_cluster(kind, size)
    try:
        yield cluster
    finally:
        cluster.stop()


def stop() -> None:
    """Stop every server and cluster this process started and still runs."""
    with _lock:
        clusters = list(_running)
    for cluster in clusters:
        cluster.stop()


atexit.register(stop)


# --------------------------------------------------------------------------
# Command line: servers that outlive the command, recorded in STATE_FILE


def _load_state() -> list[Cluster]:
    try:
        records = json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        return []
    clusters = []
    for record in records:
        members = [
            Member(record["kind"], m["index"], tuple(m["ports"]), Path(m["directory"]), m["pid"])
            for m in record["members"]
        ]
        # a recorded PID that now runs something else is not ours: forget it
        for member in members:
            if not _cmdline(member.pid).startswith(record["command"]):
                member.pid = 0
        clusters.append(Cluster(KINDS[record["kind"]], members))
    return clusters


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _save_state(clusters: Sequence[Cluster]) -> None:
    records = [
        {
            "kind": c.kind.name,
            "url": c.url,
            "command": _cmdline(c.members[0].pid).split(" ")[0],
            "members": [
                {"index": m.index, "ports": list(m.ports), "directory": str(m.directory),
                 "pid": m.pid}
                for m in c.members
            ],
        }
        for c in clusters
    ]  # fmt: skip
    STATE_FILE.parent.mkdir(exist_ok=True)
    STATE_FILE.write_text(json.dumps(records, indent=2) + "\n")


def main(argv: Sequence[str]) -> int:
    """``start [KIND ...]`` | ``status`` | ``stop``; see the module docstring."""
    command, names = (argv[0], list(argv[1:])) if argv else ("", [])
    if command == "start":
        running = [c for c in _load_state() if c.members_alive()]
        if running:
            print(f"already running (see {STATE_FILE}); run 'stop' first", file=sys.stderr)
            return 1
        try:
            clusters = _start([(name, 1) for name in names or DEFAULT_KINDS], detach=True)
        except ServerError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        _save_state(clusters)
        for cluster in clusters:
            print(f"export MOOT_TEST_{cluster.kind.name.upper()}_URL={cluster.url}")
        return 0
    if command == "status":
        clusters = _load_state()
        for cluster in clusters:
            for m in cluster.members:
                state = (
                    "answers"
                    if m.alive() and cluster.kind.ready(m)
                    else ("running, not answering" if m.alive() else "gone")
                )
                print(f"{cluster.kind.name:10} {cluster.url:40} pid {m.pid or '-':>7}  {state}")
        if not clusters:
            print("no servers recorded")
        return 0
    if command == "stop":
        for cluster in _load_state():
            _stop_members(cluster.members)
        STATE_FILE.unlink(missing_ok=True)
        return 0
    print("usage: python -m tests.servers start [KIND ...] | status | stop", file=sys.stderr)
    print(f"kinds: {', '.join(KINDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
