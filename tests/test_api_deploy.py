"""The container deployment: docker-compose.yml and the Dockerfile. The compose file is checked as data here, and by
`docker compose config` where the compose plugin is installed (skipped otherwise)."""

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


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"the docker compose plugin is not installed: {probe.stderr.strip()[:200]}")
    env = {**os.environ, "SAM2GRASP_TOKEN": "compose-config-check-0123456789"}
    args = [docker, "compose", "-f", str(COMPOSE), "--profile", "sim", "--profile", "robot", "--profile", "ursim"]
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
