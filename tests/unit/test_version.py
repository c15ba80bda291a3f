"""The version is visible where operators look: `roac --version` and `roac_build_info`."""

from prometheus_client import generate_latest
from typer.testing import CliRunner

import shared.metrics  # noqa: F401 - registers roac_build_info
from services.cli import app
from shared.version import roac_version


def test_roac_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"roac {roac_version()}"
    assert roac_version() != "0+unknown"  # make installs the package


def test_every_process_exposes_its_build() -> None:
    exposed = generate_latest().decode()
    assert 'roac_build_info{python="' in exposed
    assert f'version="{roac_version()}"' in exposed
