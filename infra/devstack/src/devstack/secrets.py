"""Development secrets, made once at set-up and never committed.

- ``.env`` from ``.env.example`` (development values only) when it is missing;
- ``.secrets/jwt-private.pem``: the RSA key user-service signs access tokens with,
  mounted into the container as a compose secret and read from disk natively.
"""

import shutil
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

JWT_KEY_FILE = Path(".secrets/jwt-private.pem")


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


def ensure_dev_secrets(*, root: Path) -> None:
    ensure_env_file(root=root)
    key_file = root / JWT_KEY_FILE
    if not key_file.exists():
        write_rsa_key(key_file)
