"""A stack of the offload tests' own: their Iceberg warehouse, state DB and watermarks start empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k2.settings import Settings, load_settings
from tests.support import Stack, running_stack


@pytest.fixture(scope="package")
def cold_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("k2cold")) / "data", K2_OFFLOAD_SAFETY_BUFFER_S="0") as running:
        yield running


def offload_settings(stack: Stack, **overrides: object) -> Settings:
    """The stack's settings with no safety buffer (tests wait for silver, not for the clock)."""
    values: dict[str, object] = {"offload_safety_buffer_s": 0, "offload_retries": 0, **overrides}
    return load_settings(stack.env, **values)
