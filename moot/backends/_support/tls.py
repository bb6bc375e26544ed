"""One TLS vocabulary for every backend that speaks TLS.

Options (URL query or keywords):

``tls``
    true to speak TLS; the default is the scheme's (true for ``rediss://``
    and ``etcd3+https://``, where false is refused as a contradiction).
``ca_cert``
    PEM file of the certificate authorities to trust (default: the system's).
``cert``, ``key``
    PEM files of the client certificate and its private key (``key`` may be
    left out when ``cert`` holds both).
``verify``
    true (the default) to check the server's certificate and host name;
    false turns both checks off and logs a warning.

Each backend also takes its older spellings as aliases (see
:data:`REDIS_ALIASES`, :data:`ETCD_ALIASES`); an option given under two of
its names is refused. Every bad TLS option (an unknown value such as
``tls=treu``, a certificate option without TLS, a ``key`` without ``cert``,
a file that cannot be loaded) raises :class:`moot.errors.InvalidURL` when the
backend is made, before any I/O."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any

from moot.errors import InvalidURL
from moot.url import option_bool

log = logging.getLogger("moot.backends.tls")

#: The options of :func:`tls_context`, under their own names.
TLS_OPTIONS = frozenset({"tls", "ca_cert", "cert", "key", "verify"})

#: redis's older spellings (the names redis-py uses). ``ssl_cert_reqs`` takes
#: ``required`` (= ``verify=true``), ``none`` (= ``verify=false``) or
#: ``optional`` (the certificate is checked, the host name is not).
REDIS_ALIASES: Mapping[str, str] = {"ssl_ca_certs": "ca_cert", "ssl_certfile": "cert", "ssl_keyfile": "key",
                                    "ssl_cert_reqs": "verify"}

#: etcd's older spellings.
ETCD_ALIASES: Mapping[str, str] = {"cert_cert": "cert", "cert_key": "key"}

_CERT_REQS = {"required": (ssl.CERT_REQUIRED, True), "optional": (ssl.CERT_OPTIONAL, False),
              "none": (ssl.CERT_NONE, False)}


def option_names(aliases: Mapping[str, str]) -> frozenset[str]:
    """Every TLS option a backend with ``aliases`` accepts."""
    return TLS_OPTIONS | frozenset(aliases)


def _path(name: str, value: object) -> str | None:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InvalidURL(f"option {name}={value!r:.60} must be the path of a PEM file")
    return value or None


def tls_context(options: Mapping[str, Any], *, default: bool, aliases: Mapping[str, str],
                where: str) -> ssl.SSLContext | None:
    """The client TLS context the options ask for, None for plain TCP.

    ``default`` is whether the scheme implies TLS; ``where`` (a redacted URL)
    goes into messages. Raises InvalidURL for every bad TLS option."""
    given: dict[str, tuple[str, Any]] = {}  # canonical name -> (name given, value)
    for name, value in options.items():
        canonical = aliases.get(name, name)
        if canonical not in TLS_OPTIONS:
            continue
        if canonical in given:
            raise InvalidURL(f"options {given[canonical][0]} and {name} are the same TLS option; give one")
        given[canonical] = (name, value)
    tls = option_bool({"tls": given["tls"][1]}, "tls", default) if "tls" in given else default
    if default and not tls:
        raise InvalidURL(f"tls=false contradicts the scheme of {where}, which speaks TLS")
    if not tls:
        if given:
            names = ", ".join(sorted(name for name, _ in given.values()))
            raise InvalidURL(f"option {names} of {where} needs TLS: add tls=true (or use the TLS scheme)")
        return None
    mode, check_hostname = ssl.CERT_REQUIRED, True
    if "verify" in given:
        name, value = given["verify"]
        if name == "ssl_cert_reqs":
            if not isinstance(value, str) or value not in _CERT_REQS:
                raise InvalidURL(f"option ssl_cert_reqs={value!r:.60} must be one of: required, optional, none")
            mode, check_hostname = _CERT_REQS[value]
        elif not option_bool({name: value}, name, True):
            mode, check_hostname = ssl.CERT_NONE, False
    ca, cert, key = (_path(*given[n]) if n in given else None for n in ("ca_cert", "cert", "key"))
    if key and not cert:
        raise InvalidURL(f"option {given['key'][0]} of {where} needs the certificate too (option cert)")
    try:
        context = ssl.create_default_context(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidURL(f"cannot load the TLS files given in the options of {where}: {exc}") from None
    context.check_hostname = check_hostname
    context.verify_mode = mode
    if mode == ssl.CERT_NONE:
        log.warning("TLS to %s does not verify the server's certificate (verify=false): anyone on the path "
                    "can pose as the server", where)
    return context
