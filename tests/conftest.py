from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Stack, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack (Tansu + embedded ClickHouse, migrated) shared by the integration tests.

    Tests keep out of each other's way by using their own canonical symbols.
    """
    with running_stack(Path(tmp_path_factory.mktemp("k2")) / "data") as running:
        yield running
