"""The container tests' plumbing, offline: which images need stand-ins, and the
private engine's configuration."""

from pathlib import Path

from devstack.engine import _config
from devstack.standins import KINDS, NOT_IMITATED, _repository, images_named

ROOT = Path(__file__).resolve().parents[4]


def test_every_image_the_deployment_names_has_a_stand_in_or_a_reason():
    images = images_named(root=ROOT, compose_files=[ROOT / "docker-compose.yml", ROOT / "docker-compose.consul.yml"])
    assert "python:3.11-slim" in images
    assert any(image.startswith("hashicorp/consul:") for image in images)
    assert {_repository(image) for image in images} <= set(KINDS) | set(NOT_IMITATED)
    for kind, _ in KINDS.values():
        assert (ROOT / "tests" / "containers" / "standins" / kind / "Dockerfile").is_file(), kind


def test_repository_drops_only_a_tag():
    assert _repository("axllent/mailpit:v1.29.7") == "axllent/mailpit"
    assert _repository("registry.local:5000/team/image") == "registry.local:5000/team/image"


def test_the_private_engine_keeps_to_its_own_folders_and_lowered_limits(tmp_path):
    config = _config(data_root=tmp_path / "data", run_dir=tmp_path / "run")
    assert config["data-root"] == str(tmp_path / "data")
    assert config["hosts"] == [f"unix://{tmp_path / 'run' / 'docker.sock'}"]
    assert all(str(config[key]).startswith(str(tmp_path)) for key in ("exec-root", "pidfile"))
    limits = config["default-ulimits"]
    assert isinstance(limits, dict)
    assert limits["nofile"]["Hard"] <= 1024
    assert limits["nproc"]["Hard"] <= 1000
