"""``etcd://host:port[,host:port...][/root]``: etcd v3 (also ``etcd3+http://``, ``etcd3+https://``).

The backend speaks etcd's v3 JSON gateway (``/v3/``; ``/v3beta/`` on etcd
3.3) with the standard library only: pooled keep-alive ``http.client``
connections for calls, and one thread that reads every watch stream. Measured
against one etcd 3.4 on loopback, a read round trip took 0.34 ms through
``http.client``, 0.45 ms through urllib3, 0.87 ms through etcd3gw (requests)
and 0.31 ms through the gRPC client ``etcd3`` (unmaintained; it imports only
with the pure-Python protobuf). So the gateway over ``http.client`` is within
10% of gRPC, 2.5 times faster than etcd3gw, and needs no package at all.

Sessions
    A session is a lease; its id is the lease id in decimal. etcd counts lease
    TTLs in whole seconds, so the lease is asked for ``ceil(ttl)`` (1 s at
    least), and the server may raise it to its own minimum (1.5 election
    timeouts rounded up: 2 s with etcd's defaults, 1 s with
    ``--election-timeout 500``). ``granted_ttl`` is the TTL etcd reports in
    its LeaseGrant answer, and after each refresh the TTL of its keep-alive
    answer. A refresh is one LeaseKeepAlive round trip, whatever the number
    of keys; an answer with no TTL left raises SessionExpired.

    Validity: etcd's leader restarts a lease's full TTL when it receives the
    keep-alive (or grant), which is after the call started, and only ever
    extends leases on its own (a new leader adds an election timeout; the
    expiry scan runs every 0.5 s), so etcd does not expire the lease before
    the start of the last successful ``open_session``/``refresh_session``
    plus ``granted_ttl``. A keep-alive resent after a lost answer, or on
    another member, is received later still: it can only push the expiry
    back. ``session_last_seen`` is exact to the second (etcd reports whole
    seconds).

Keys
    An entry's version is its ``mod_revision``, its ``seq`` its
    ``create_revision`` (on every entry) and its owner its lease. Sequential
    keys are the prefix plus a random unique name: they are ordered by their
    seq (the cluster's revision: strictly increasing, kept across restarts),
    not by their name. ``enqueue`` is one transaction (put, then read the
    prefix). A path in the URL (``etcd://h:2379/app``) puts every key under
    ``app/``.

Watch
    Each watch is one gateway watch stream (the gateway cannot add a watch to
    an open stream: Go's HTTP/1 server reads no request body once it has
    answered); one OS thread per backend reads them all (also under
    eventlet's monkey-patching, with the real ``select``), and ``cancel()``
    closes the stream at once. ``watch()`` returns once etcd confirmed the
    watch. A stream that breaks is reopened (on the next host) and its
    callback called, so no change goes unnoticed. Exception: watches on queue
    entries (keys made by ``enqueue``), which a lock waiter makes afresh at
    each turn, share one stream per queue, kept open 10 s after its last
    watch ends: no connection and no round trip per wait, and no 100 ms
    stall when a write lands while etcd registers a new watch (etcd 3.4 then
    delivers that watch's events only at its next catch-up, up to 100 ms
    later).

Deadlines and failures
    Every call returns or raises within :func:`moot.deadline.remaining` of
    the connect ``timeout`` (its per-call bound): connecting, each request,
    waits while the cluster elects a leader and watch setup all share that
    one deadline, and ConnectionLost says how long the call really took. A
    host that refuses a connection is skipped for the next one in the URL at
    once (if every host refuses, the call fails at once, saying so).
    Idempotent requests (reads, deletes, lease grant, keep-alive and revoke,
    watch creation) that get no answer within 1 s are sent again to the next
    host (then 2 s, 4 s, ... within the deadline): a request that a member
    forwarded to a leader that died is otherwise held by etcd for its own
    request timeout (about 6 s) although a new leader is elected in under
    1 s. A delete sent again after a lost answer reports True when the key
    is gone, since the lost attempt may have deleted it. A lease granted by
    an attempt whose answer was lost owns no key and expires on its TTL.
    Other writes are sent again only where etcd certainly did not apply them
    (it answered "no leader"); otherwise their lost answer raises
    ConnectionLost. Only network failures become ConnectionLost: anything
    else propagates as it is.

Fork
    ``forget_after_fork()`` (in a forked child) closes the inherited
    descriptors with a plain ``close()`` (no lease revoke, no ``shutdown()``,
    no change to the parent's epoll set) and marks the backend closed, so
    the parent's lease, keys and watches are left exactly as they were; any
    later call in the child raises CoordinatorClosed.

Options
    ``tls=true`` (implied by ``etcd3+https``), ``ca_cert``, ``cert_cert``,
    ``cert_key`` (PEM file paths); ``user:password@`` in the URL logs in to
    etcd (a new token is fetched when one expires).
"""


from moot.backends.etcd.backend import EtcdBackend

__all__ = ["EtcdBackend"]
