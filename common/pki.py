"""X.509 helpers for a fleet's CA and its device, broker and operator certificates.

Keys are EC P-256 (small and fast on a Pi class CPU). Private keys are written with mode 0600
and never leave the machine that made them: a device makes its key and a CSR, the operator's
CA signs the CSR.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path}: expected an EC private key")
    return key


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str, days: int = 3650) -> tuple[PrivateKey, x509.Certificate]:
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_csr(key: PrivateKey, cn: str) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder().subject_name(_name(cn)).sign(key, hashes.SHA256())
    )


def sign_csr(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    *,
    days: int = 825,
    server_names: list[str] | None = None,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign ``csr``: a client certificate, or a server one when ``server_names`` is given."""
    if not csr.is_signature_valid:
        raise ValueError("CSR signature is invalid")
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    b = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server_names:
        sans: list[x509.GeneralName] = []
        for n in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    else:
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return b.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class DevPki:
    """A development PKI in one folder: CA, broker (server), device and operator certs."""

    dir: Path
    ca: CertPair
    server: CertPair
    device: CertPair
    operator: CertPair


def issue(
    dir: Path,
    name: str,
    cn: str,
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    server_names: list[str] | None = None,
    days: int = 825,
    not_before: dt.datetime | None = None,
) -> CertPair:
    key = new_key()
    cert = sign_csr(
        ca_key,
        ca_cert,
        make_csr(key, cn),
        days=days,
        server_names=server_names,
        not_before=not_before,
    )
    pair = CertPair(dir / f"{name}.crt", dir / f"{name}.key")
    write_key(pair.key, key)
    write_cert(pair.cert, cert)
    return pair


def make_dev_pki(dir: Path, device_id: str, operator: str = "operator") -> DevPki:
    """Create (or reuse, if complete) a development PKI under ``dir``."""
    names = ("ca", "server", "device", "operator")
    if all((dir / f"{n}.crt").exists() and (dir / f"{n}.key").exists() for n in names):
        pairs = [CertPair(dir / f"{n}.crt", dir / f"{n}.key") for n in names]
        return DevPki(dir, *pairs)
    dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_cert = make_ca("Tether development CA")
    write_key(dir / "ca.key", ca_key)
    write_cert(dir / "ca.crt", ca_cert)
    ca = CertPair(dir / "ca.crt", dir / "ca.key")
    server = issue(dir, "server", "localhost", ca_key, ca_cert, ["localhost", "127.0.0.1", "::1"])
    device = issue(dir, "device", device_id, ca_key, ca_cert)
    op = issue(dir, "operator", operator, ca_key, ca_cert)
    return DevPki(dir, ca, server, device, op)
