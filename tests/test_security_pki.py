"""Provisioning through the real CLI: `tether pki init`, `tether provision`, `tether pki sign`,
`tether provision --install`; CSR and certificate validation; key modes."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.pki import (
    PkiError,
    cert_problem,
    check_device_csr,
    init_ca,
    load_ca,
    load_cert,
    load_csr,
    make_csr,
    new_key,
    sign_device_csr,
    write_cert,
)
from common.provision import DeviceFiles
from tests.security_fixtures import tether


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_full_provisioning_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir, dev = tmp_path / "ca", tmp_path / "etc-tether"
    assert tether("pki", "init", str(ca_dir)) == 0
    assert _mode(ca_dir / "ca.key") == 0o600 and _mode(ca_dir) == 0o700
    ca_before = (ca_dir / "ca.crt").read_bytes()
    assert tether("pki", "init", str(ca_dir)) == 0  # reuses, never overwrites
    assert (ca_dir / "ca.crt").read_bytes() == ca_before
    assert "using the existing" in capsys.readouterr().out

    assert tether("provision", "--device-id", "gw-01", "--dir", str(dev)) == 0
    files = DeviceFiles(dev)
    assert _mode(files.key) == 0o600
    key_before = files.key.read_bytes()
    assert tether("provision", "--device-id", "gw-01", "--dir", str(dev)) == 0
    assert files.key.read_bytes() == key_before  # the key is kept; only the CSR is remade

    crt = tmp_path / "gw-01.crt"
    args = ["pki", "sign", "--ca", str(ca_dir), str(files.csr), "--out", str(crt)]
    assert tether(*args, "--days", "30") == 0
    cert = load_cert(crt)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-01"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=29) < life <= dt.timedelta(days=30)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False

    capsys.readouterr()
    install = ["provision", "--dir", str(dev), "--install", str(crt), "--ca"]
    assert tether(*install, str(ca_dir / "ca.crt"), "--broker", "mqtt.example:8883") == 0
    out = capsys.readouterr().out
    assert 'device_id = "gw-01"' in out and 'host = "mqtt.example"' in out
    assert f'key_file = "{files.key}"' in out
    assert files.cert.read_bytes() == crt.read_bytes()
    assert files.ca.read_bytes() == ca_before
    assert cert_problem(files.cert, files.ca) is None


def test_install_refuses_a_certificate_for_another_key_or_ca(tmp_path: Path) -> None:
    ca, _ = init_ca(tmp_path / "ca")
    other, _ = init_ca(tmp_path / "other")
    dev = tmp_path / "dev"
    assert tether("provision", "--device-id", "gw-02", "--dir", str(dev)) == 0
    # Signed by another CA:
    foreign = sign_device_csr(other, load_csr((dev / "device.csr").read_bytes()))
    write_cert(tmp_path / "foreign.crt", foreign)
    install = ["provision", "--dir", str(dev), "--ca", str(ca.cert_path), "--install"]
    assert tether(*install, str(tmp_path / "foreign.crt")) == 2
    # Signed by the right CA but for some other key:
    stranger = sign_device_csr(ca, make_csr(new_key(), "gw-02"))
    write_cert(tmp_path / "stranger.crt", stranger)
    assert tether(*install, str(tmp_path / "stranger.crt")) == 2
    assert not (dev / "device.crt").exists()
    # --install without --ca, provision without an id: usage errors.
    assert tether("provision", "--dir", str(dev), "--install", "x.crt") == 2
    assert tether("provision", "--dir", str(dev)) == 2
    assert tether("provision", "--device-id", "bad/id", "--dir", str(dev)) == 2


def _raw_csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: x509.Name) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("name", "key", "why"),
    [
        ("gw/+#", "ec", "not a valid device id"),
        ("", "ec", "exactly one CN"),
        ("gw 01", "ec", "not a valid device id"),
        ("-gw", "ec", "not a valid device id"),
        ("two", "ec", "exactly one CN"),
        ("gw", "rsa", "EC P-256"),
    ],
)
def test_sign_refuses_bad_csrs(tmp_path: Path, name: str, key: str, why: str) -> None:
    ca, _ = init_ca(tmp_path / "ca")
    k = rsa.generate_private_key(65537, 2048) if key == "rsa" else new_key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, name)] if name else []
    if name == "two":
        attrs = [
            x509.NameAttribute(NameOID.COMMON_NAME, "gw"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"),
        ]
    pem = _raw_csr(k, x509.Name(attrs))
    with pytest.raises(PkiError, match=why):
        sign_device_csr(ca, load_csr(pem))
    (tmp_path / "r.csr").write_bytes(pem)
    assert (
        tether(
            "pki",
            "sign",
            "--ca",
            str(ca.dir),
            str(tmp_path / "r.csr"),
            "--out",
            str(tmp_path / "r.crt"),
        )
        == 2
    )
    assert not (tmp_path / "r.crt").exists()


def test_sign_refuses_a_tampered_csr(tmp_path: Path) -> None:
    pem = make_csr(new_key(), "gw-01").public_bytes(serialization.Encoding.PEM)
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the signature
    csr = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(PkiError, match="signature"):
        check_device_csr(csr)
    with pytest.raises(PkiError, match="not a PEM"):
        load_csr(b"hello")


def test_sign_bounds_days_and_the_cas_own_lifetime(tmp_path: Path) -> None:
    ca, _ = init_ca(tmp_path / "ca", days=10)
    csr = make_csr(new_key(), "gw-01")
    for days in (0, -1, 3651):
        with pytest.raises(PkiError, match="days"):
            sign_device_csr(ca, csr, days=days)
    with pytest.raises(PkiError, match="CA expires"):
        sign_device_csr(ca, csr, days=30)
    assert tether("pki", "sign", "--ca", str(tmp_path / "nope"), "x", "--out", "y") == 2


def test_load_ca_checks_the_folder(tmp_path: Path) -> None:
    _, created = init_ca(tmp_path / "ca")
    assert created
    (tmp_path / "ca" / "ca.key").chmod(0o644)
    with pytest.raises(PkiError, match="chmod 600"):
        load_ca(tmp_path / "ca")
    (tmp_path / "ca" / "ca.key").chmod(0o600)
    init_ca(tmp_path / "other")
    (tmp_path / "ca" / "ca.crt").write_bytes((tmp_path / "other" / "ca.crt").read_bytes())
    with pytest.raises(PkiError, match="does not belong"):
        load_ca(tmp_path / "ca")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "ca.crt").write_bytes(b"")
    with pytest.raises(PkiError, match="missing"):
        init_ca(tmp_path / "half")


def test_cert_problem_names_expiry_and_wrong_ca(tmp_path: Path) -> None:
    ca, _ = init_ca(tmp_path / "ca")
    other, _ = init_ca(tmp_path / "other")
    csr = make_csr(new_key(), "gw-01")
    old = sign_device_csr(
        ca, csr, days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    )
    write_cert(tmp_path / "old.crt", old)
    assert "expired on" in str(cert_problem(tmp_path / "old.crt"))
    future = sign_device_csr(
        ca, csr, days=1, not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    )
    write_cert(tmp_path / "future.crt", future)
    assert "device clock" in str(cert_problem(tmp_path / "future.crt"))
    write_cert(tmp_path / "ok.crt", sign_device_csr(ca, csr, days=5))
    assert cert_problem(tmp_path / "ok.crt", ca.cert_path) is None
    assert "does not verify against this CA" in str(
        cert_problem(tmp_path / "ok.crt", other.cert_path)
    )
    assert "cannot read" in str(cert_problem(tmp_path / "missing.crt"))


def test_pki_issue_makes_operator_and_server_certs(tmp_path: Path) -> None:
    assert tether("pki", "init", str(tmp_path / "ca")) == 0
    out = tmp_path / "certs"
    assert (
        tether(
            "pki", "issue", "--ca", str(tmp_path / "ca"), "--name", "alice", "--out-dir", str(out)
        )
        == 0
    )
    assert _mode(out / "alice.key") == 0o600
    assert (
        tether(
            "pki",
            "issue",
            "--ca",
            str(tmp_path / "ca"),
            "--name",
            "broker",
            "--server",
            "mqtt.example",
            "--server",
            "10.0.0.1",
            "--out-dir",
            str(out),
        )
        == 0
    )
    san = load_cert(out / "broker.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "mqtt.example" in san.value.get_values_for_type(x509.DNSName)
    assert (
        tether(
            "pki",
            "issue",
            "--ca",
            str(tmp_path / "ca"),
            "--name",
            "bad name",
            "--out-dir",
            str(out),
        )
        == 2
    )
