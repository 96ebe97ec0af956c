"""Device-side provisioning: make the device's key and CSR, then install the signed certificate.

The flow (docs/security.md):

1. on the device: ``tether provision --device-id gw-01 --dir /etc/tether`` writes
   ``device.key`` (mode 0600; it never leaves the device) and ``device.csr`` (CN = device id);
2. the operator copies the CSR out and signs it: ``tether pki sign --ca fleet-ca device.csr
   --out gw-01.crt``;
3. on the device: ``tether provision --dir /etc/tether --install gw-01.crt --ca ca.crt``
   checks that the certificate matches the key and was issued by that CA, installs both and
   prints the ``[mqtt]`` section for ``tether.toml``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.pki import (
    PkiError,
    load_cert,
    load_key,
    make_csr,
    new_key,
    subject_cn,
    valid_device_id,
    verify_issued,
    write_key,
)

DEVICE_KEY, DEVICE_CSR, DEVICE_CERT, CA_CERT = "device.key", "device.csr", "device.crt", "ca.crt"


@dataclass(frozen=True)
class DeviceFiles:
    dir: Path

    @property
    def key(self) -> Path:
        return self.dir / DEVICE_KEY

    @property
    def csr(self) -> Path:
        return self.dir / DEVICE_CSR

    @property
    def cert(self) -> Path:
        return self.dir / DEVICE_CERT

    @property
    def ca(self) -> Path:
        return self.dir / CA_CERT


def make_request(dir: Path, device_id: str, *, new_key_: bool = False) -> tuple[DeviceFiles, bool]:
    """Write the device key (kept if it exists, unless ``new_key_``) and a CSR for
    ``device_id``. Returns (files, key_created)."""
    if not valid_device_id(device_id):
        raise PkiError(
            f"device id {device_id!r} is invalid: letters, digits, '_', '.', '-', at most 64, "
            "starting with a letter or digit"
        )
    files = DeviceFiles(dir)
    dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    created = new_key_ or not files.key.exists()
    if created:
        key = new_key()
        write_key(files.key, key)
    else:
        try:
            key = load_key(files.key)
        except (ValueError, TypeError) as err:
            raise PkiError(
                f"{files.key} exists but is not a usable key ({err}); pass --new-key to replace it"
            ) from err
        os.chmod(files.key, 0o600)
    csr = make_csr(key, device_id)
    files.csr.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    os.chmod(files.csr, 0o644)
    return files, created


def install(dir: Path, cert_path: Path, ca_path: Path) -> str:
    """Check ``cert_path`` against the device key and ``ca_path``, then copy both into
    ``dir`` as device.crt and ca.crt. Returns the device id (the certificate's CN)."""
    files = DeviceFiles(dir)
    if not files.key.exists():
        raise PkiError(f"{files.key} is missing: run `tether provision --device-id ID` first")
    try:
        key = load_key(files.key)
        cert = load_cert(cert_path)
        ca = load_cert(ca_path)
    except (OSError, ValueError, TypeError) as err:
        raise PkiError(f"cannot read the key or certificates: {err}") from err
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise PkiError(
            f"{cert_path} was not made for this device's key ({files.key}); sign this "
            f"device's {DEVICE_CSR}"
        )
    verify_issued(cert, ca)
    cn = subject_cn(cert.subject)
    if cn is None or not valid_device_id(cn):
        raise PkiError(f"{cert_path}: the certificate's CN {cn!r} is not a device id")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise PkiError(f"{cert_path} is not a client certificate (clientAuth usage missing)")
    for src, dst in ((cert_path, files.cert), (ca_path, files.ca)):
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
    return cn


def mqtt_section(files: DeviceFiles, host: str, port: int = 8883) -> str:
    """The ``[mqtt]`` TOML section that uses the installed files."""
    return (
        "[mqtt]\n"
        f'host = "{host}"\n'
        f"port = {port}\n"
        f'ca_file = "{files.ca}"\n'
        f'cert_file = "{files.cert}"\n'
        f'key_file = "{files.key}"\n'
    )
