"""The deployment files are valid, and every service they name also runs without Docker."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose is installed by `make test`"
)
def test_docker_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_roac_service_in_compose_is_a_roac_command() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {
        name: spec["command"] for name, spec in compose["services"].items() if "command" in spec
    }
    assert commands == {
        "migrate": ["roac", "migrate"],
        "ingest": ["roac", "ingest"],
        "matcher": ["roac", "matcher"],
        "notifier": ["roac", "notifier"],
    }
    for args in commands.values():
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", args[1], "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
