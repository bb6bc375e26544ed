"""``etcd://host:port[,host:port...][/root]``: etcd v3 (also ``etcd3+http://``, ``etcd3+https://``).

Needs etcd 3.3 or newer and no client package (etcd's v3 JSON gateway over
the standard library). Options: the TLS options of
:mod:`moot.backends._support.tls` (``tls``, ``ca_cert``, ``cert``, ``key``,
``verify``; ``etcd3+https`` implies ``tls=true``) with the older
``cert_cert`` (= ``cert``) and ``cert_key`` (= ``key``) as aliases;
``user:password@`` in the URL logs in to etcd (a new token is fetched when
one expires). A path in the URL puts every key under it.

Guarantees (how they are kept: ``docs/design/etcd.md``):

* A session is a lease of ``ceil(ttl)`` seconds (or etcd's minimum, if
  higher: ``granted_ttl`` says which); etcd does not expire it before the
  start of the last successful ``open_session``/``refresh_session`` plus
  ``granted_ttl``.
* ``seq`` is the key's ``create_revision``: strictly increasing across the
  cluster, kept across restarts.
* ``watch()`` returns once etcd confirmed the watch; a stream that breaks is
  reopened and its callback called, so no change goes unnoticed.
* Every call returns or raises within :func:`moot.deadline.remaining` of the
  connect ``timeout``; ConnectionLost states the time spent. Idempotent
  requests are resent to the next host when unanswered; other writes only
  where etcd certainly did not apply them. A delete resent after a lost
  answer reports True when the key is gone.
* In a forked child, ``forget_after_fork()`` closes the inherited
  descriptors without any I/O; the parent's lease, keys and watches stay
  as they were.
"""


from moot.backends.etcd.backend import EtcdBackend

__all__ = ["EtcdBackend"]
