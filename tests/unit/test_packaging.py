"""Packaging rules, checked from the files, so drift shows in CI: every package the code imports
directly is declared in pyproject.toml (the runtime dependencies for shared/ and services/; the
dev extra too for services/devstack/, the development stack), and the lock files the venv, CI
and the image install from (`make lock`) pin every declared package, with hashes, the image's
lock at the versions the tests ran."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
# Imported only by the development stack (`roac up`, `roac mailcatcher`), never by a service.
DEV_ONLY_PACKAGES = (ROOT / "services" / "devstack",)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", spec.strip())
    assert match, spec
    return _normalized(match.group(0))


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_requirement_name(spec) for spec in project["dependencies"]}
    dev = {_requirement_name(spec) for spec in project["optional-dependencies"]["dev"]}
    return runtime, dev


def _pins(lock: Path) -> dict[str, str]:
    """The lock's `name==version` lines, by normalized name."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if match:
            pins[_normalized(match.group(1))] = match.group(2)
    return pins


def test_the_runtime_lock_pins_every_runtime_dependency() -> None:
    runtime, _ = _declared()
    assert runtime - set(_pins(RUNTIME_LOCK)) == set(), "run `make lock`"


def test_the_dev_lock_pins_every_dependency_and_the_dev_extra() -> None:
    runtime, dev = _declared()
    assert (runtime | dev) - set(_pins(DEV_LOCK)) == set(), "run `make lock`"


def test_the_image_runs_the_versions_the_tests_ran() -> None:
    runtime, dev = _pins(RUNTIME_LOCK), _pins(DEV_LOCK)
    assert set(runtime) <= set(dev)
    assert {name: v for name, v in runtime.items() if dev[name] != v} == {}


def test_the_dev_extra_stays_out_of_the_image() -> None:
    runtime, dev = _declared()
    assert {"aiosmtpd", "pytest"} & set(_pins(RUNTIME_LOCK)) == set()
    assert "aiosmtpd" in dev - runtime


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_pin_carries_hashes(lock: Path) -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
    pinned = [entry for entry in entries if re.match(r"[A-Za-z0-9._-]+==", entry)]
    assert pinned
    assert [entry.split()[0] for entry in pinned if "--hash=sha256:" not in entry] == []


def _third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return {
        name
        for name in names
        if name not in sys.stdlib_module_names and name not in ("shared", "services")
    }


def test_every_package_the_code_imports_is_declared() -> None:
    runtime, dev = _declared()
    distributions = importlib.metadata.packages_distributions()
    undeclared = set()
    for package in ("shared", "services"):
        for path in (ROOT / package).rglob("*.py"):
            allowed = runtime | dev if path.is_relative_to(*DEV_ONLY_PACKAGES) else runtime
            for name in _third_party_imports(path):
                owners = {_normalized(d) for d in distributions.get(name, [name])}
                if not owners & allowed:
                    undeclared.add((str(path.relative_to(ROOT)), name))
    assert undeclared == set()


def test_the_mail_catcher_says_what_it_needs_without_aiosmtpd(tmp_path: Path) -> None:
    """In a process of its own, where `import aiosmtpd` fails as on an image without the dev
    extra (in this process other tests have imported it already, and it would just run)."""
    from services.cli import MAILCATCHER_NEEDS_DEV

    shadow = tmp_path / "aiosmtpd"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'aiosmtpd'\", name='aiosmtpd')\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "mailcatcher"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "aiosmtpd" in MAILCATCHER_NEEDS_DEV
    output = " ".join((result.stdout + result.stderr).split())
    assert MAILCATCHER_NEEDS_DEV.split(":")[0] in output
