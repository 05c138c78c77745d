from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO, Stack, running_stack


@dataclass(frozen=True)
class SecuredStack:
    stack: Stack
    secrets: dict[str, str]  # K2_* variable -> the random secret it was set to

    @property
    def supervisor_pid(self) -> int:
        return int((self.stack.data_dir / "run" / "k2.pid").read_text())


@pytest.fixture(scope="package")
def secured_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredStack]:
    """Everything `k2 up` starts by default (broker, ClickHouse, exporter, replayed exchanges, handlers,
    Prefect and the flows) with a ClickHouse password and Iceberg secrets set: one start for the listener
    and the secret tests."""
    values = {
        "K2_CLICKHOUSE_PASSWORD": f"ch-password-{secrets.token_hex(12)}",
        "K2_ICEBERG_S3_SECRET_ACCESS_KEY": f"s3-secret-{secrets.token_hex(12)}",
        "K2_ICEBERG_REST_CREDENTIAL": f"k2-client:rest-secret-{secrets.token_hex(12)}",
    }
    data_dir = Path(tmp_path_factory.mktemp("k2sec")) / "data"
    with running_stack(data_dir, "--replay", str(REPO / "captures"), "--flows", **values) as stack:
        yield SecuredStack(stack, values)
