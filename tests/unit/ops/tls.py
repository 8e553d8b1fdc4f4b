"""A private CA and an HTTPS server whose certificate it signed, for tests of what trusts that CA."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class PrivateCa:
    ca_file: Path  # the bundle a client trusts
    cert_file: Path  # the server's certificate (127.0.0.1, localhost)
    key_file: Path
    common_name: str


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    issuer: str,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A day-long certificate for `subject`'s key, signed by `signer` (the issuer's key)."""
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder(
        issuer_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]),
        subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]),
        public_key=key.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=now - datetime.timedelta(minutes=5),
        not_valid_after=now + datetime.timedelta(days=1),
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


def make_private_ca(folder: Path, common_name: str = "tuya-fleet test CA") -> PrivateCa:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    # may sign certificates (keyCertSign) and CRLs, nothing else
    usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    ca = _issue(common_name, ca_key, ca_key, common_name, [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (usage, True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    ])  # fmt: skip
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = _issue("localhost", key, ca_key, common_name, [
        (x509.SubjectAlternativeName(names), False),
        (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ])  # fmt: skip
    paths = PrivateCa(folder / "ca.crt", folder / "server.crt", folder / "server.key", common_name)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for path, content in [
        (paths.ca_file, ca.public_bytes(pem)),
        (paths.cert_file, cert.public_bytes(pem)),
        (paths.key_file, key_pem),
    ]:
        path.write_bytes(content)
    return paths


@dataclass
class Recorded:
    """What the server saw: (method, path, Authorization header) per request."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)


@contextmanager
def https_server(ca: PrivateCa, responses: dict[str, object]) -> Iterator[tuple[str, Recorded]]:
    """An HTTPS server on 127.0.0.1 answering `responses[path]` as JSON (200), else `{}` (200); yields its
    base URL and what it received."""
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            recorded.requests.append((self.command, self.path, self.headers.get("Authorization")))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = json.dumps(responses.get(self.path, {})).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = _answer  # http.server's names

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.cert_file, ca.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
