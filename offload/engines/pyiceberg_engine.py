"""The embedded engine: Arrow straight into pyiceberg, delete + append in one Iceberg transaction."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Table

from offload.errors import CommitError

__all__ = ["PyIcebergEngine"]


class PyIcebergEngine:
    name = "pyiceberg"

    def commit(
        self, table: Table, batch: pa.Table, properties: dict[str, str], replace: BooleanExpression | None
    ) -> int | None:
        try:
            with table.transaction() as tx:
                if replace is not None and _matches(table, replace):
                    tx.delete(replace, snapshot_properties=properties)
                tx.append(batch, snapshot_properties=properties)
        except Exception as exc:  # pyiceberg/pyarrow/IO errors: nothing was committed
            raise CommitError(f"{'.'.join(table.name())}: commit failed: {exc}") from exc
        table.refresh()
        snapshot = table.current_snapshot()
        return snapshot.snapshot_id if snapshot else None

    def close(self) -> None:
        pass


def _matches(table: Table, rows: BooleanExpression) -> bool:
    """Whether cold holds any of ``rows`` (pyiceberg warns on a delete that matches nothing)."""
    if table.current_snapshot() is None:
        return False
    return bool(table.scan(row_filter=rows, selected_fields=("bucket",), limit=1).to_arrow().num_rows)
