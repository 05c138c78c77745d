"""What can be checked of the supply chain offline: every dependency pinned to one exact release, the
environment being exactly those releases, and `make audit` (pip-audit) ready for a machine that reaches an
advisory source. pip-audit itself cannot run here: pypi.org answers 404 for the per-release JSON it reads
(``/pypi/<name>/<version>/json``) and OSV's host does not resolve; see the Makefile's `audit` target."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirements() -> dict[str, list[Requirement]]:
    groups = {"dependencies": PYPROJECT["project"]["dependencies"], **PYPROJECT["project"]["optional-dependencies"]}
    return {group: [Requirement(r) for r in reqs] for group, reqs in groups.items()}


def _pin(requirement: Requirement) -> str | None:
    """The exact release ``requirement`` allows, or None when it allows a range."""
    specifiers = list(requirement.specifier)
    if len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version:
        return specifiers[0].version
    return None


def test_every_dependency_is_pinned_to_one_release() -> None:
    loose = [f"{group}: {r}" for group, reqs in _requirements().items() for r in reqs if _pin(r) is None or r.marker]
    assert loose == []
    pins: dict[str, set[str]] = {}
    for reqs in _requirements().values():
        for r in reqs:
            pins.setdefault(canonicalize_name(r.name), set()).add(str(_pin(r)))
    assert {name: sorted(v) for name, v in pins.items() if len(v) > 1} == {}  # e.g. pyspark in spark and dev


def test_the_environment_is_the_pinned_releases() -> None:
    """What `make audit` audits is what pyproject.toml pins (`make install` reinstalls when it changes)."""
    wrong = {}
    for reqs in _requirements().values():
        for r in reqs:
            try:
                installed = version(r.name)
            except PackageNotFoundError:
                installed = "missing"
            if installed != _pin(r):
                wrong[r.name] = f"{installed} installed, {_pin(r)} pinned"
    assert wrong == {}


def test_make_audit_runs_pip_audit_strictly() -> None:
    """--strict: a package the advisory source does not answer for fails the audit (without it, pip-audit
    prints "No known vulnerabilities found" having skipped all of them, as it does offline)."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^audit:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None, "the Makefile has no audit target"
    command = recipe.group(1).split()
    assert command[0] == "$(VENV)/bin/pip-audit" and {"--strict", "--skip-editable"} <= set(command)
    assert any(r.name == "pip-audit" for r in _requirements()["dev"])
