"""X.509 helpers for a fleet's CA and its device, broker and operator certificates.

Keys are EC P-256 (small and fast on a Pi class CPU). Private keys are written with mode 0600
and never leave the machine that made them: a device makes its key and a CSR, the operator's
CA signs the CSR.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
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


# --- fleet provisioning: CA folder, device CSR validation, signing ------------------------

#: A device id as the device configuration accepts it (``common.config.DeviceId``); it is the
#: certificate's CN, the broker username and a topic segment, so it never holds ``/+#``.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: Longest validity ``sign_device_csr`` accepts (about ten years).
MAX_DAYS = 3650


class PkiError(Exception):
    """A CA folder, CSR or certificate is missing or invalid; the message says what to do."""


@dataclass(frozen=True)
class FleetCa:
    """A fleet CA in one folder: ``ca.crt`` (public, goes to every device and the broker)
    and ``ca.key`` (mode 0600, stays with the operator)."""

    dir: Path
    key: PrivateKey
    cert: x509.Certificate

    @property
    def cert_path(self) -> Path:
        return self.dir / "ca.crt"


def init_ca(dir: Path, cn: str = "Tether fleet CA", days: int = MAX_DAYS) -> tuple[FleetCa, bool]:
    """Create a fleet CA in ``dir`` (mode 0700), or load the one already there.

    Returns (ca, created). Never overwrites: an existing ``ca.key`` without ``ca.crt`` (or the
    reverse) is an error, since replacing either would orphan every certificate signed so far.
    """
    key_path, cert_path = dir / "ca.key", dir / "ca.crt"
    if key_path.exists() or cert_path.exists():
        return load_ca(dir), False
    dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dir, 0o700)
    key, cert = make_ca(cn, days)
    write_key(key_path, key)
    write_cert(cert_path, cert)
    return FleetCa(dir, key, cert), True


def load_ca(dir: Path) -> FleetCa:
    """Load ``dir/ca.key`` + ``dir/ca.crt``; checks that they belong together and form a CA."""
    key_path, cert_path = dir / "ca.key", dir / "ca.crt"
    for p in (key_path, cert_path):
        if not p.exists():
            raise PkiError(f"{p} is missing: create a CA with `tether pki init {dir}`")
    try:
        key = load_key(key_path)
        cert = load_cert(cert_path)
    except (ValueError, TypeError) as err:
        raise PkiError(f"{dir}: cannot read the CA: {err}") from err
    if key.public_key().public_numbers() != _ec_public(cert).public_numbers():
        raise PkiError(f"{dir}: ca.key does not belong to ca.crt")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise PkiError(f"{cert_path} is not a CA certificate (basicConstraints CA:TRUE missing)")
    if key_path.stat().st_mode & 0o077:
        raise PkiError(f"{key_path} is readable by other users: run `chmod 600 {key_path}`")
    return FleetCa(dir, key, cert)


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise PkiError("expected an EC (P-256) certificate")
    return pub


def subject_cn(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


def valid_device_id(value: str) -> bool:
    return re.fullmatch(DEVICE_ID_PATTERN, value) is not None


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as err:
        raise PkiError(f"not a PEM certificate signing request: {err}") from err


def check_device_csr(csr: x509.CertificateSigningRequest) -> str:
    """Validate a device's CSR; returns its device id (the CN).

    Checks: the self-signature (proves the requester holds the key), exactly one CN that is a
    valid device id and nothing else in the subject, an EC P-256 key.
    """
    if not csr.is_signature_valid:
        raise PkiError("the CSR's signature is invalid (corrupted, or not made with its key)")
    cn = subject_cn(csr.subject)
    if cn is None or len(csr.subject) != 1:
        raise PkiError(
            "the CSR's subject must be exactly one CN (the device id); got "
            f"{csr.subject.rfc4514_string()!r}"
        )
    if not valid_device_id(cn):
        raise PkiError(
            f"the CSR's CN {cn!r} is not a valid device id (letters, digits, '_', '.', '-'; "
            "at most 64; starts with a letter or digit)"
        )
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise PkiError("the CSR's key must be EC P-256 (made by `tether provision`)")
    return cn


def sign_device_csr(
    ca: FleetCa,
    csr: x509.CertificateSigningRequest,
    *,
    days: int = 825,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """Validate ``csr`` (:func:`check_device_csr`) and sign a client-auth certificate."""
    check_device_csr(csr)
    if not 1 <= days <= MAX_DAYS:
        raise PkiError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    if ca.cert.not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(days=days):
        raise PkiError(
            f"the CA expires on {ca.cert.not_valid_after_utc:%Y-%m-%d}, before the requested "
            f"certificate would; lower --days or renew the CA"
        )
    return sign_csr(ca.key, ca.cert, csr, days=days, not_before=not_before)


def verify_issued(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Check that ``cert`` was signed by ``ca_cert`` and is valid now."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError) as err:
        raise PkiError(f"the certificate was not issued by this CA: {err}") from err
    except InvalidSignature as err:
        raise PkiError("the certificate's signature does not verify against this CA") from err
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError(
            f"the certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
        )


def cert_problem(cert_path: Path, ca_path: Path | None = None) -> str | None:
    """Why the certificate at ``cert_path`` cannot work now, in words for a log line (expired,
    not yet valid, not issued by ``ca_path``, unreadable), or None when it looks fine.

    For the device's MQTT link: a TLS handshake refused by the broker only says "certificate
    verify failed" or "alert certificate expired"; this names the file and the dates.
    """
    try:
        cert = load_cert(cert_path)
    except (OSError, ValueError) as err:
        return f"cannot read the certificate {cert_path}: {err}"
    now = dt.datetime.now(dt.UTC)
    if now > cert.not_valid_after_utc:
        return (
            f"the certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} "
            "UTC; sign a new one (`tether provision` + `tether pki sign`)"
        )
    if now < cert.not_valid_before_utc:
        return (
            f"the certificate {cert_path} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is the device clock right?)"
        )
    if ca_path is not None:
        try:
            verify_issued(cert, load_cert(ca_path))
        except (OSError, ValueError) as err:
            return f"cannot read the CA certificate {ca_path}: {err}"
        except PkiError as err:
            return f"{cert_path}: {err}"
    return None
