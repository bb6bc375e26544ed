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
backend is made, before any I/O. A handshake that fails for a reason a retry
cannot fix (see :func:`handshake_failure`) raises :class:`moot.errors.TLSFailed`
on every backend."""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from moot.errors import InvalidURL, TLSFailed
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
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a NUL in a path
        raise InvalidURL(f"cannot load the TLS files given in the options of {where}: {exc}") from None
    context.check_hostname = check_hostname
    context.verify_mode = mode
    if mode != ssl.CERT_NONE and not check_hostname:
        log.warning("TLS to %s does not check that the server's certificate names its host (ssl_cert_reqs="
                    "optional): any server with a certificate from a trusted authority can pose as it", where)
    if mode == ssl.CERT_NONE:
        log.warning("TLS to %s does not verify the server's certificate (verify=false): anyone on the path "
                    "can pose as the server", where)
    return context


#: OpenSSL's reasons for a failed handshake that a retry cannot fix: the
#: server refused our certificate, or the peer does not speak TLS.
_PERMANENT_REASONS = frozenset({
    "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_ACCESS_DENIED", "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION",
    "SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
})


_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"})
_UNTRUSTED_HINT = "give the authority that signed it with ca_cert=<PEM file>, or connect by the host name the " \
    "certificate names"
_NOT_TLS_HINT = "the server does not speak TLS on this port; check the port or turn tls off"
_CLIENT_HINT = "the server refused the handshake; check the client certificate (cert, key) it expects"

#: How client libraries that keep the ssl error to themselves (libpq, through
#: psycopg) word the same failures in their messages: OpenSSL's reasons in
#: its lower-case spelling, and libpq's and the server's own sentences.
_PERMANENT_TEXTS: tuple[tuple[str, str], ...] = (
    ("certificate verify failed", _UNTRUSTED_HINT),
    ("does not match host name", _UNTRUSTED_HINT),
    ("server does not support ssl", "the server does not offer TLS; turn it on there, or turn tls off"),
    ("ssl is required but the server doesn't support it", "the server does not offer TLS; turn it on there, or "
     "turn tls off"),
    ("requires a valid client certificate", "give the client certificate the server requires with cert= and key="),
    *((reason.lower().replace("_", " "), _NOT_TLS_HINT if reason in _NOT_TLS else _CLIENT_HINT)
      for reason in sorted(_PERMANENT_REASONS)),
)


def handshake_failure(exc: BaseException, where: str) -> TLSFailed | None:
    """The :class:`TLSFailed` to raise for ``exc``, an error met while
    connecting to ``where`` (a redacted URL or address), when it is a TLS
    failure a retry cannot fix; None for anything else (a reset or a timeout
    mid-handshake stays the backend's retryable ``ConnectionLost``).

    Looks through ``__cause__``/``__context__``, for client libraries that wrap
    the ssl module's errors in their own; then, for those that keep it to
    themselves, at the text of ``exc`` (:data:`_PERMANENT_TEXTS`)."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ssl.SSLCertVerificationError):
            return TLSFailed(f"TLS to {where}: the server's certificate was refused ({error.verify_message}); "
                             + _UNTRUSTED_HINT)
        if isinstance(error, ssl.SSLError) and error.reason in _PERMANENT_REASONS:
            hint = _NOT_TLS_HINT if error.reason in _NOT_TLS else _CLIENT_HINT
            return TLSFailed(f"TLS to {where} failed ({error.reason}): {hint}")
        error = error.__cause__ or error.__context__
    text = " ".join(str(exc).split())
    for words, hint in _PERMANENT_TEXTS:
        if words in text.lower():
            return TLSFailed(f"TLS to {where} failed ({text}): {hint}")
    return None


#: How long :func:`closed_after_handshake` waits for the server's alert.
_ALERT_WAIT = 0.25


def closed_after_handshake(exc: BaseException, dial: Callable[[], socket.socket], context: ssl.SSLContext,
                           host: str, where: str) -> TLSFailed | None:
    """The :class:`TLSFailed` to raise when a server closed a fresh TLS
    connection (``exc``: an EOF or a reset) on the first command sent after
    the handshake, because it refused the client certificate (or wanted one):
    None if that is not why.

    With TLS 1.3 the server judges the client's certificate after the
    client's side of the handshake is over, and a server that then closes
    without reading the command just sent (memcached, redis) makes the kernel
    drop the alert that says why. So, only after such a close: dial again
    (``dial()``: a connected plain socket), handshake and send nothing; the
    alert then arrives alone, within a round trip (waited for up to
    :data:`_ALERT_WAIT` seconds)."""
    if not isinstance(exc, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError):
        return None
    try:
        sock = dial()
    except OSError:
        return None
    try:
        sock.settimeout(_ALERT_WAIT)
        sock = context.wrap_socket(sock, server_hostname=host)
        sock.recv(1)
    except OSError as again:
        return handshake_failure(again, where)
    finally:
        sock.close()
    return None
