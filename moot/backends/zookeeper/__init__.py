"""``zookeeper://host:port[,host:port...][/chroot]`` (alias ``kazoo://``): ZooKeeper through kazoo.

Keys live under the URL's chroot (default ``/moot``): key ``a/b`` is znode
``/moot/a/b``. ``user:password@`` in the URL authenticates with ZooKeeper's
``digest`` scheme and creates every znode readable and writable by that
identity only. While the connection is down kazoo reconnects by itself.

Deadlines
    Every primitive, whatever round trips it makes (waiting for a
    reconnection included), returns or raises within the caller's deadline
    (:mod:`moot.deadline`), itself at most the ``timeout`` option (default
    10 s), plus a few milliseconds; ConnectionLost then states the time it
    took. ``connect`` fails at once, saying so, when every host refuses the
    connection. ``close`` grants the close request what is left of the
    deadline (at least 0.2 s), then cuts the connection; kazoo's own shutdown
    finishes on a daemon thread, and the server ends the session when its
    timeout runs out.

Sessions
    A moot session is a native ZooKeeper session whose timeout is the TTL;
    kazoo pings the server by itself. The server bounds session timeouts to
    [``minSessionTimeout``, ``maxSessionTimeout``], by default 2 and 20
    ``tickTime`` (4 s to 40 s with the usual 2 s tick), and expires sessions
    on tick boundaries: for TTLs of 1 s, run the server with ``tickTime=250``
    (or ``minSessionTimeout=500``). What the server granted is read from its
    answer to each connection (kazoo keeps it to itself) into
    ``granted_ttl``, logged once as a warning when it differs from the TTL.
    ``refresh_session`` sends a ``sync`` and an ``exists`` of the session's
    record together and waits for both: the server renews the session when
    it receives them, after the call started, and the ``sync`` is answered
    only once the server has heard from the ensemble's leader, so a server
    cut off from the leader (which may expire the session meanwhile) fails
    the refresh instead of answering from its stale copy. One window is
    left on an ensemble: a follower passes its clients' activity to the
    leader with its next ping answer (every ``tickTime / 2``), so a follower
    cut off from the leader in that instant, right after answering, leaves
    the leader counting from the renewal before. Session ids are the ZooKeeper session ids
    in hex; every live session also has an ephemeral record
    ``<chroot>/.sessions/<id>`` holding its password, so that
    ``expire_session`` can end any session for real: it attaches a second
    connection to that session and closes it, which the server treats like an
    expiry (ephemeral znodes go, watches fire, the owner learns it on its
    next contact). The tradeoff: any client that can read the chroot can
    attach to (hence end, or act as) any moot session; restrict the chroot
    with credentials when the ensemble is shared with untrusted clients.
    When kazoo reports the session LOST, the session listener is called.

Keys and versions
    A key's znode data is one header byte and the value; znodes created as
    mere parents (empty data) are not keys, and are never deleted, so the
    sequence counters they carry survive. A key's version is its ``mzxid``
    (changes on every write, never reused), its owner the ``ephemeralOwner``
    in hex. Deletes and versioned writes read the znode first (to map the
    mzxid onto the znode version, and never to delete a mere parent): two
    round trips, except on the sequential keys this backend created, whose
    names are never reused: one round trip. ``enqueue`` sends its creation
    and its listing together: one round trip on an empty queue. ``list``
    asks for the children of a level's znodes together, then reads all their
    data in ONE multi-read request (ZooKeeper 3.6+; kazoo 2.11 has no call
    for it, and sends one request per znode at ~0.1 ms of Python each: 1,000
    members took 140 ms, now 6 ms). A server without multi-read answers
    UNIMPLEMENTED and drops the connection once (kazoo reconnects, the
    session lives); the backend then reads one znode per request.

Sequence
    Sequential keys are ZooKeeper sequential znodes (names are the parent's
    10-digit counter, so their key order is their creation order); their
    ``seq`` is their ``czxid``, the cluster's transaction id of the creation:
    strictly increasing for ever, even if someone deletes the parent znodes.
    ZooKeeper's per-parent counter is a signed 32-bit int: after 2**31
    creations and deletions under one prefix, names stop sorting in creation
    order. Each sequential znode carries a random tag, so a creation whose
    reply was lost with the connection is found and removed once connected
    again: a lost reply never leaves a phantom waiter in a queue.

Watch
    kazoo 2.11 has no persistent watches (ZooKeeper 3.6 ``addWatch``), so
    one-shot watches are re-armed before callbacks run (except that a watched
    key's deletion calls back at once, and again if the key is back once
    re-armed: a lock handoff waits for no extra round trip). A key watch is a data
    watch on the znode, or, while the key is absent, a child watch on its
    parent (so watching deleted sequential keys leaks no server watch). A
    prefix watch is a child watch on the parent plus a data watch on each
    child. After a reconnection every watch is re-armed and called once.

Values
    Values over :data:`moot.backends.base.MAX_VALUE_BYTES` raise
    InvalidArgument before any I/O: the server drops the connection of a
    request over its frame limit (``jute.maxbuffer``, 1 MiB), which would be
    retried for ever. For the same reason a multi-read carries at most
    256 KiB of paths.

Fork
    ``forget_after_fork`` closes the child's copies of the sockets with
    ``os.close`` only; kazoo's threads stayed in the parent. The parent's
    connection and session carry on untouched; in the child every primitive
    raises ConnectionLost at once.

Green threads
    Under ``eventlet.monkey_patch()`` kazoo is given a handler of its own
    made only of what the OS provides: real threads, locks, events, queues
    and result conditions, the real socket module, ``poll`` and
    ``time.sleep`` (eventlet's saved originals). kazoo imported after the
    patching would otherwise run its connection thread and results green,
    and the coordinator's heartbeat, a real OS thread, could not wait on
    them ("Cannot switch to a different thread"): the session would be
    lost whenever the application's green threads keep the CPU. So kazoo
    behaves as a blocking library on threads of its own, and an application
    green thread never blocks eventlet's hub on it: it only sends requests,
    and waits for an answer (or for the connection, or for the lock that
    serializes session changes, whose owner is the green thread itself) in
    short ``time.sleep`` pauses, which let the other green threads run. Real
    threads wait as usual. Long waits (a lock's turn) happen in moot's
    recipes, on :func:`moot.realthreads.Event`.

Threads: kazoo's connection thread and two callback workers, plus one
dispatcher thread for watch callbacks (and, briefly, one per client
stopped); all real OS threads, also under eventlet.
"""

from moot.backends.zookeeper.backend import ZooKeeperBackend

__all__ = ["ZooKeeperBackend"]
