"""Compaction on the pyiceberg path: a partition's small data files rewritten into files near the target.

pyiceberg has no rewrite procedure, so this is one. Per partition, the data files under 75 % of
``write.target-file-size-bytes`` (on disk) are bin-packed into groups of about one target; each group
of two or more files is read (delete files applied, current schema), sorted by the partition's source
column and written back. Every replaced file and its rewrites are swapped in ONE overwrite commit per
table that carries the given snapshot properties (the offload's watermark), so ``committed_watermark``
reads the same value before and after, and a reader sees either the old files or the new ones.

pyiceberg sizes the files it writes by in-memory Arrow bytes; the writer's target is scaled by the
group's Arrow-to-Parquet ratio so files land near the target on disk, and a compacted partition does
not qualify again the next day (no daily churn).

Callers hold the table's lock (offload/maintenance.py), so no offload commits meanwhile; a commit that
races anyway fails pyiceberg's conflict validation and changes nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.table import FileScanTask, Table
from pyiceberg.typedef import Record
from pyiceberg.utils.properties import property_as_int

from offload.catalog import TARGET_FILE_BYTES

__all__ = ["CompactionStats", "compact", "plan_compaction"]

TARGET_PROPERTY = "write.target-file-size-bytes"
#: files at or above this share of the target are left alone (Spark's binpack default: 75 %)
SMALL_FILE_RATIO = 0.75


@dataclass(frozen=True)
class CompactionStats:
    partitions: int = 0
    files_removed: int = 0
    files_added: int = 0
    rows: int = 0
    snapshot_id: int | None = None

    def describe(self) -> str:
        if not self.partitions:
            return "nothing to compact"
        return (f"{self.partitions} partition(s): {self.files_removed} files -> {self.files_added}, "
                f"{self.rows} rows rewritten")  # fmt: skip


def target_bytes(table: Table) -> int:
    value = property_as_int(table.properties, TARGET_PROPERTY, TARGET_FILE_BYTES)
    return value if value is not None else TARGET_FILE_BYTES


def plan_compaction(table: Table, target: int) -> list[list[FileScanTask]]:
    """Groups of files to rewrite together: same partition, each file small, each group <= ~target."""
    if table.current_snapshot() is None:
        return []
    partitions: dict[tuple[int, Record], list[FileScanTask]] = {}
    for task in table.scan().plan_files():
        if task.file.file_size_in_bytes < SMALL_FILE_RATIO * target:
            partitions.setdefault((task.file.spec_id, task.file.partition), []).append(task)
    groups: list[list[FileScanTask]] = []
    for small in partitions.values():
        bins: list[tuple[int, list[FileScanTask]]] = []  # first fit, largest files first
        for task in sorted(small, key=lambda t: -t.file.file_size_in_bytes):
            size = task.file.file_size_in_bytes
            for i, (used, members) in enumerate(bins):
                if used + size <= target:
                    bins[i] = (used + size, [*members, task])
                    break
            else:
                bins.append((size, [task]))
        groups.extend(members for _, members in bins if len(members) > 1)
    return groups


def _sort_column(table: Table) -> str | None:
    fields = table.spec().fields
    return table.schema().find_column_name(fields[0].source_id) if fields else None


def compact(table: Table, snapshot_properties: dict[str, str], target: int | None = None) -> CompactionStats:
    """Rewrite ``table``'s small files (see module docstring); no commit when nothing qualifies."""
    target = target or target_bytes(table)
    groups = plan_compaction(table, target)
    if not groups:
        return CompactionStats()
    schema = table.schema()
    reader = ArrowScan(table.metadata, table.io, schema, AlwaysTrue())
    sort_by = _sort_column(table)
    counter = itertools.count(0)
    removed = added = rows = 0
    tx = table.transaction()
    with tx, tx.update_snapshot(snapshot_properties=snapshot_properties).overwrite() as rewrite:
        # the predicate only scopes manifest pruning and conflict checks; the files deleted are the
        # ones named below, nothing else
        rewrite.delete_by_predicate(AlwaysTrue())
        for group in groups:
            batch: pa.Table = reader.to_table(group)
            if sort_by is not None and batch.num_rows:
                batch = batch.sort_by(sort_by)
            on_disk = sum(t.file.file_size_in_bytes for t in group)
            scaled = max(1, int(target * max(batch.nbytes, 1) / max(on_disk, 1)))
            meta = tx.table_metadata.model_copy(
                update={"properties": {**tx.table_metadata.properties, TARGET_PROPERTY: str(scaled)}}
            )
            for task in group:
                rewrite.delete_data_file(task.file)
            removed += len(group)
            rows += batch.num_rows
            if batch.num_rows:
                for data_file in _dataframe_to_data_files(
                    meta, batch, table.io, write_uuid=rewrite.commit_uuid, counter=counter
                ):
                    rewrite.append_data_file(data_file)
                    added += 1
    table.refresh()
    snapshot = table.current_snapshot()
    partitions = len({(t.file.spec_id, t.file.partition) for g in groups for t in g})
    return CompactionStats(partitions, removed, added, rows, snapshot.snapshot_id if snapshot else None)
