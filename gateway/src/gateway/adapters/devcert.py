"""A self-signed certificate for the gateway's TLS port on a developer's machine.

``ensure_dev_certificate`` leaves a good pair alone and otherwise writes a new one:
an ECDSA P-256 key (mode 0600) and a certificate for localhost, 127.0.0.1 and ::1,
valid a year. Clients trust it by naming the certificate file as their CA
(``curl --cacert``, ``httpx.Client(verify=...)``). Two callers at once (make and
compose) take turns on a lock file, so the key and certificate always match.
"""

import datetime
import fcntl
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
_VALID_DAYS = 365
# A certificate this close to its end is replaced rather than kept.
_RENEW_BEFORE = datetime.timedelta(days=7)
_NAMES = ("localhost",)
_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class DevCertificate:
    cert_file: Path
    key_file: Path
    created: bool


def ensure_dev_certificate(*, directory: Path, now: datetime.datetime | None = None) -> DevCertificate:
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / CERT_FILE, directory / KEY_FILE
    moment = now or datetime.datetime.now(datetime.UTC)
    with (directory / ".devcert.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _still_good(cert_file=cert_file, key_file=key_file, now=moment):
            return DevCertificate(cert_file=cert_file, key_file=key_file, created=False)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _self_signed(key=key, now=moment)
        _write(
            key_file,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            mode=0o600,
        )
        _write(cert_file, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return DevCertificate(cert_file=cert_file, key_file=key_file, created=True)


def _still_good(*, cert_file: Path, key_file: Path, now: datetime.datetime) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    if certificate.not_valid_after_utc - _RENEW_BEFORE < now:
        return False
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        key.public_key().public_bytes(serialization.Encoding.PEM, public)
        == certificate.public_key().public_bytes(serialization.Encoding.PEM, public)
    )


def _self_signed(*, key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Interchange development"),
        ]
    )
    alternative_names: list[x509.GeneralName] = [x509.DNSName(host) for host in _NAMES]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in _ADDRESSES]
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _write(path: Path, content: bytes, *, mode: int) -> None:
    """Write through a temporary file and rename: a reader sees the old file or the new."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(descriptor, mode)  # the umask must not widen or narrow it
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    temporary.replace(path)
