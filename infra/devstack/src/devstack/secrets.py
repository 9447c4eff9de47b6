"""Development secrets, made once at set-up and never committed.

- ``.env`` from ``.env.example`` (development values only) when it is missing;
- ``.secrets/jwt-private.pem``: the RSA key user-service signs access tokens with,
  mounted into the container as a compose secret and read from disk natively;
- ``.secrets/tls-cert.pem`` and ``.secrets/tls-key.pem``: a self-signed certificate
  for localhost, 127.0.0.1 and ::1 that the gateway serves HTTPS and HTTP/2 with on
  8443. Made again when it is missing or has less than a day left;
- ``.secrets/grafana-admin-password``: a random password for Grafana's admin (the
  compose profile "observability"), which ships none of its own; made when missing.
"""

import datetime
import ipaddress
import secrets
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

JWT_KEY_FILE = Path(".secrets/jwt-private.pem")
TLS_CERT_FILE = Path(".secrets/tls-cert.pem")
TLS_KEY_FILE = Path(".secrets/tls-key.pem")
GRAFANA_PASSWORD_FILE = Path(".secrets/grafana-admin-password")
TLS_NAMES = ("localhost",)
TLS_ADDRESSES = ("127.0.0.1", "::1")
TLS_VALID_DAYS = 365


def ensure_env_file(*, root: Path) -> Path:
    env_file = root / ".env"
    if not env_file.exists():
        shutil.copyfile(root / ".env.example", env_file)
    return env_file


def write_rsa_key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
    )
    # Readable by the container's non-root user through the bind mount; not committed.
    path.chmod(0o644)


def write_dev_certificate(*, cert_path: Path, key_path: Path) -> None:
    """A self-signed server certificate for this machine's loopback names."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Interchange development")])
    now = datetime.datetime.now(datetime.UTC)
    alternative_names: list[x509.GeneralName] = [x509.DNSName(host) for host in TLS_NAMES]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in TLS_ADDRESSES]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=TLS_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o644)  # as the JWT key: the container's non-root user reads the mount
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_password(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(secrets.token_urlsafe(24))
    path.chmod(0o644)  # as the keys: the container's non-root user reads the mount


def _certificate_current(path: Path, *, now: datetime.datetime) -> bool:
    if not path.exists():
        return False
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return certificate.not_valid_after_utc - now > datetime.timedelta(days=1)


def ensure_dev_secrets(*, root: Path, now: datetime.datetime | None = None) -> None:
    ensure_env_file(root=root)
    key_file = root / JWT_KEY_FILE
    if not key_file.exists():
        write_rsa_key(key_file)
    moment = now or datetime.datetime.now(datetime.UTC)
    if not (root / TLS_KEY_FILE).exists() or not _certificate_current(root / TLS_CERT_FILE, now=moment):
        write_dev_certificate(cert_path=root / TLS_CERT_FILE, key_path=root / TLS_KEY_FILE)
    if not (root / GRAFANA_PASSWORD_FILE).exists():
        write_password(root / GRAFANA_PASSWORD_FILE)
