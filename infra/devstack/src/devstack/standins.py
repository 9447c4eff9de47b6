"""Images this machine cannot pull, built in the private engine under their upstream names.

No image registry is reachable here, so before compose builds and runs anything, the
private engine (devstack.engine) gets:

- a Debian base, ``debian:bookworm-slim``, from ``debootstrap --variant=minbase`` and
  ``docker import`` (made once; the engine's data root keeps it);
- a stand-in for every image the compose file and the Dockerfiles name, built from
  ``tests/containers/standins/<kind>/`` on that base with Debian's own packages, and
  tagged with the upstream name so that the compose file and Dockerfiles build and
  run unchanged. Built every run: the build cache makes that cheap, and a changed
  stand-in is picked up.

Consul has no Debian package and is not imitated: the compose file keeps it in a file
of its own (docker-compose.consul.yml), which the tests leave out.
The services of a compose profile (observability: the collector, Jaeger, Prometheus,
Grafana) are not imitated either: the tests run compose without any profile.

    ensure_standins()  build what is missing; the table of what stands in for what
"""

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack.engine import Engine
from devstack.errors import EngineFailed

BASE = "debian:bookworm-slim"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The stand-in folder for each upstream repository, and what it runs in its place.
KINDS = {
    "python": ("python", "Debian's python3.11"),
    "postgres": ("postgres", "Debian's postgresql-15"),
    "redis": ("redis", "Debian's redis-server 7.0"),
    "rabbitmq": ("rabbitmq", "Debian's rabbitmq-server 3.10 with management"),
    "curlimages/curl": ("curl", "Debian's curl"),
    "axllent/mailpit": ("mailpit", "devstack's SMTP sink with Mailpit's read API"),
    "haproxy": ("haproxy", "Debian's haproxy 2.6"),
}
NOT_IMITATED = {"hashicorp/consul": "not run: Consul has no Debian package (static discovery instead)"}
_FROM = re.compile(r"^FROM\s+(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Substitute:
    image: str
    ran: str


def _repository(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def images_named(*, root: Path, compose_files: list[Path]) -> list[str]:
    """Every upstream image the compose files (outside profiles) and the services'
    Dockerfiles name."""
    named: list[str] = []
    for compose_file in compose_files:
        document = yaml.safe_load(compose_file.read_text())
        services = document["services"].values()
        # An image named with a variable (interchange/gateway:${IMAGE_TAG}) is ours, built here.
        named += [
            service["image"]
            for service in services
            if "image" in service and not service.get("profiles") and "${" not in service["image"]
        ]
    for dockerfile in sorted(root.glob("*/Dockerfile")):
        named += [image for image in _FROM.findall(dockerfile.read_text()) if image.lower() not in {"build", "runtime"}]
    return list(dict.fromkeys(named))


def _ensure_base(engine: Engine) -> None:
    if engine.docker("image", "inspect", BASE, check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="ic-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        made = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            raise EngineFailed(f"debootstrap failed: {made.stderr.strip()[-1000:]}")
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            imported = subprocess.run(
                ["docker", "import", "-", BASE], stdin=tar.stdout, env=engine.environ, capture_output=True, text=True
            )
        if imported.returncode != 0 or tar.returncode != 0:
            raise EngineFailed(f"docker import of the Debian base failed: {imported.stderr.strip()}")


def _build(engine: Engine, *, context: Path, tag: str, extra: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory(prefix="ic-standin-") as scratch:
        build_context = Path(scratch) / "context"
        shutil.copytree(context, build_context)
        for name, source in extra.items():
            shutil.copy(source, build_context / name)
        # The classic builder: BuildKit would fetch its frontend from a registry.
        result = subprocess.run(
            ["docker", "build", "--quiet", "--tag", tag, str(build_context)],
            env={**engine.environ, "DOCKER_BUILDKIT": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise EngineFailed(f"building the stand-in {tag} failed: {result.stderr.strip()[-2000:]}")


def ensure_standins(*, engine: Engine, root: Path, compose_files: list[Path]) -> list[Substitute]:
    """A stand-in in the engine for every image the deployment names; what ran in
    place of each."""
    standins = root / "tests" / "containers" / "standins"
    extra = {
        "python": {"ca-certificates.crt": SYSTEM_CA_BUNDLE},
        "mailpit": {"mailsink.py": Path(__file__).with_name("mailsink.py")},
    }
    table: list[Substitute] = []
    images = images_named(root=root, compose_files=compose_files)
    # The Python base first: the mail sink's stand-in is built on it.
    images.sort(key=lambda image: _repository(image) != "python")
    _ensure_base(engine)
    for image in images:
        repository = _repository(image)
        if repository in NOT_IMITATED:
            table.append(Substitute(image=image, ran=NOT_IMITATED[repository]))
            continue
        if repository not in KINDS:
            raise EngineFailed(f"no stand-in for {image}: add one under {standins}")
        kind, ran = KINDS[repository]
        _build(engine, context=standins / kind, tag=image, extra=extra.get(kind, {}))
        table.append(Substitute(image=image, ran=f"stand-in: {ran}"))
    return table


def table_text(substitutes: list[Substitute]) -> str:
    width = max((len(substitute.image) for substitute in substitutes), default=0)
    lines = [f"{'image in the compose file':<{width}}  what ran in its place"]
    lines += [f"{substitute.image:<{width}}  {substitute.ran}" for substitute in substitutes]
    return "\n".join(lines)
