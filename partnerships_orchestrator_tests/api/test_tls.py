"""`--tls-cert/--tls-key`: the API process `partnerships up` starts serves HTTPS."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from partnerships_orchestrator.launcher import ApiOptions, Stack
from partnerships_orchestrator_tests.api.conftest import PREFIX, wait_for
from partnerships_orchestrator_tests.api.conftest import Stack as Product
from partnerships_orchestrator_tests.ports import free_port


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_api_serves_https_with_the_given_certificate(stack: Product, tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    options = ApiOptions(port=free_port(), tls_cert=str(cert), tls_key=str(key))
    processes = Stack()
    processes.start(options.command("127.0.0.1"), stack.env, tmp_path / "api.log")
    try:
        url = f"{options.url('127.0.0.1')}{PREFIX}"
        assert url.startswith("https://")

        def answers() -> httpx.Response | None:
            assert processes.alive(), (tmp_path / "api.log").read_text()
            try:
                return httpx.get(
                    f"{url}/playbooks",
                    verify=str(cert),
                    headers={"Authorization": f"Bearer {stack.token('viewer')}"},
                    timeout=5,
                )
            except httpx.ConnectError:
                return None

        answer = wait_for(answers, timeout=60)
        assert answer.status_code == 200 and answer.json()["total"] == 3
        try:
            plain = httpx.get(url.replace("https", "http") + "/health/live", timeout=5)
            assert plain.status_code != 200  # plain HTTP is not served on the TLS port
        except httpx.HTTPError:
            pass  # the TLS server dropped the plain request: also a refusal
    finally:
        processes.stop(grace=3)
