"""Paths and external tools for the deployment tests. A missing tool fails the test with the fix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import compose

from tests.support import REPO

DOCKER = REPO / "docker"
COMPOSE_FILE = REPO / "docker-compose.v2.yml"
ENV_EXAMPLE = REPO / ".env.example"
RULES = DOCKER / "prometheus" / "rules"
ALERT_RULES = RULES / "k2-alerts.yml"
RULE_TESTS = DOCKER / "prometheus" / "tests" / "k2-alerts.test.yml"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
PROVISIONING = DOCKER / "grafana" / "provisioning"
COMPOSE_BINARY = Path(compose.__file__).parent / "docker-compose"


def tool(*names: str) -> str:
    """The first of ``names`` on PATH; the Debian packages come from ``make deploy-tools``."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(f"{names[0]} is not installed: run `make deploy-tools` (tests/deploy/ensure_tools.sh)")


def run(*args: str | Path, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result
