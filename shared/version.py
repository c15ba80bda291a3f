"""roac's version, as installed: what `roac --version` prints and `roac_build_info` exposes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def roac_version() -> str:
    try:
        return version("roac")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
