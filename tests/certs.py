"""Certificates made by the tests, for servers started over TLS.

``certificates(directory)`` makes (once per directory, with openssl) a test
certificate authority and, signed by it, a server certificate naming
127.0.0.1 and localhost, a client certificate, and a server certificate that
names only another host; plus a second authority that signed nothing the
servers use. Every file is PEM; keys are unencrypted; all last two days.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Certificates:
    ca: Path               #: the authority that signed every certificate below
    server_cert: Path      #: names IP 127.0.0.1 and DNS localhost
    server_key: Path
    client_cert: Path      #: CN moot-client, for servers that check client certificates
    client_key: Path
    wrong_host_cert: Path  #: signed by ``ca`` but names only elsewhere.invalid
    wrong_host_key: Path
    other_ca: Path         #: an authority that signed none of the above


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject)
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


def certificates(directory: Path) -> Certificates:
    """The test certificates in ``directory``, made there on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    made = Certificates(*(directory / name for name in (
        "ca.crt", "server.crt", "server.key", "client.crt", "client.key", "wrong-host.crt", "wrong-host.key",
        "other-ca.crt")))
    if made.other_ca.exists():
        return made
    for name, subject in (("ca", "/CN=moot-test-ca"), ("other-ca", "/CN=moot-other-ca")):
        _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.crt.part", "-days", "2", "-subj", subject)
    (directory / "ca.crt.part").rename(made.ca)
    _signed(directory, "server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth,clientAuth\n")
    _signed(directory, "client", "/CN=moot-client", "extendedKeyUsage=clientAuth\n")
    _signed(directory, "wrong-host", "/CN=elsewhere.invalid", "subjectAltName=DNS:elsewhere.invalid\n"
            "extendedKeyUsage=serverAuth\n")
    (directory / "other-ca.crt.part").rename(made.other_ca)  # last: its presence means all are made
    return made
