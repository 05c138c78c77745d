"""What an offload engine does: commit one window's batch to a cold table, atomically with its watermark."""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Table

__all__ = ["Engine"]


class Engine(Protocol):
    name: str

    def commit(
        self, table: Table, batch: pa.Table, properties: dict[str, str], replace: BooleanExpression | None
    ) -> int | None:
        """Delete ``replace`` (if any) and append ``batch``; ``properties`` go into the snapshot summary.

        Returns the id of the snapshot that carries ``properties``. An empty batch still commits, so the
        watermark advances over windows that had no rows.
        """
        ...

    def close(self) -> None: ...
