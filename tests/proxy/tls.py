"""A throwaway self-signed certificate for 127.0.0.1, made by the test, and the client's TLS.

The HTTP/2 fronts terminate TLS (browsers speak HTTP/2 only over TLS, chosen by ALPN). The
certificate is made afresh in the proxy's tmp dir by the ``openssl`` command line (Debian's
``openssl`` package, which nginx and Caddy's TLS stacks come with anyway), an EC P-256 key (fast
to make), valid for the IP address 127.0.0.1 for one day; the client trusts exactly that
certificate, so TLS is verified for real, hostname included, and nothing leaves loopback.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.raw_http import HOST

OPENSSL = "openssl"
#: The protocols the HTTP/2 client offers (ALPN), in order: HTTP/2 only.
ALPN_H2 = ("h2",)


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def client_context(self, alpn: tuple[str, ...] = ALPN_H2) -> ssl.SSLContext:
        """A client context that trusts this certificate only, offering ``alpn``."""
        context = ssl.create_default_context(cafile=str(self.cert))
        context.set_alpn_protocols(list(alpn))
        # A proxy that closes the TCP connection without TLS's close_notify (after
        # ``Connection: close``, or when it gives up) is an end of stream here, not an error.
        context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
        return context

    def spki_pin(self) -> str:
        """The base64 SHA-256 of the certificate's public key (its SubjectPublicKeyInfo), as
        Chromium's ``--ignore-certificate-errors-spki-list`` takes it: the browser then trusts
        this key only, instead of ignoring every certificate error."""
        pem = subprocess.run(
            [OPENSSL, "x509", "-in", str(self.cert), "-pubkey", "-noout"],
            capture_output=True,
            check=True,
            text=True,
            timeout=30,
        ).stdout
        # The body of the PEM public key is the DER of the SubjectPublicKeyInfo.
        der = base64.b64decode("".join(line for line in pem.splitlines() if "-----" not in line))
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


def self_signed(directory: Path) -> Certificate:
    """Write ``cert.pem`` and ``key.pem`` for :data:`tests.raw_http.HOST` into ``directory``."""
    found = Certificate(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=IP:{HOST}",
            "-keyout",
            str(found.key),
            "-out",
            str(found.cert),
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return found
