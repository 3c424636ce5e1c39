"""The container deployment: docker-compose.yml and the Dockerfile. The compose file is checked as data here, and by
`docker compose config` (or the Python docker-compose 1.29 that `make setup` installs where the v2 plugin is
missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


def services() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, Any] = doc["services"]
    return found


def test_compose_profiles_images_volumes_and_health_checks() -> None:
    svc = services()
    assert {p for s in svc.values() for p in s["profiles"]} == {"sim", "robot", "ursim"}
    assert svc["ursim"]["image"].startswith("universalrobots/ursim_e-series")
    for name in ("sim", "robot", "api-ursim"):
        s = svc[name]
        assert s["build"]["dockerfile"] == "Dockerfile"
        assert "./models:/app/models:ro" in s["volumes"]
        assert "./calibration:/app/calibration:ro" in s["volumes"]
        assert "/health" in " ".join(s["healthcheck"]["test"])
        assert all(str(p).startswith("127.0.0.1:") for p in s["ports"])  # not on every interface by default
        assert "SAM2GRASP_TOKEN" in s["environment"]
    assert "--robot-ip" in svc["api-ursim"]["command"]
    assert svc["api-ursim"]["depends_on"]["ursim"]["condition"] == "service_healthy"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM ${CUDA_IMAGE}" in dockerfile
    assert "nvidia/cuda:" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "/health" in dockerfile
    assert "USER sam2grasp" in dockerfile


def _compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) when installed, else the Python docker-compose 1.29 that `make setup` puts in
    .venv/compose (or one on PATH); None when neither is there."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    local = ROOT / ".venv" / "compose" / "bin" / "docker-compose"
    if local.is_file():
        return [str(local)]
    found = shutil.which("docker-compose")
    return [found] if found else None


def test_docker_compose_config_accepts_the_file() -> None:
    compose = _compose_command()
    if compose is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed (make setup installs it)")
    env = {**os.environ, "SAM2GRASP_TOKEN": "compose-config-check-0123456789"}
    args = [*compose, "-f", str(COMPOSE), "--profile", "sim", "--profile", "robot", "--profile", "ursim"]
    result = subprocess.run([*args, "config", "--quiet"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        [*args, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in env.items() if k != "SAM2GRASP_TOKEN"},
    )
    assert missing.returncode != 0
    assert "SAM2GRASP_TOKEN" in missing.stderr


def test_docker_compose_config_rejects_a_misspelt_key(tmp_path: Path) -> None:
    """The validator really checks the schema: the same file with one key misspelt is refused."""
    compose = _compose_command()
    if compose is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed (make setup installs it)")
    text = COMPOSE.read_text()
    assert "  restart: unless-stopped" in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("  restart: unless-stopped", "  restrat: unless-stopped", 1))
    env = {**os.environ, "SAM2GRASP_TOKEN": "compose-config-check-0123456789"}
    result = subprocess.run(
        [*compose, "-f", str(broken), "--profile", "sim", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "restrat" in result.stderr
