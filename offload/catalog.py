"""The Iceberg catalog from settings, cold tables created or evolved, and the watermark a table carries.

The committed watermark lives in the snapshot summary of the commit that wrote the rows (property
``k2.watermark_us``), so data and watermark become visible in one atomic metadata swap. Maintenance
commits (compaction) carry it forward; reading walks back through parents in case one did not.
"""

from __future__ import annotations

from typing import Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, MonthTransform

from k2.settings import Settings
from offload.schema import ColdShape
from offload.tables import NAMESPACE, TableSpec

__all__ = ["TARGET_FILE_BYTES", "WATERMARK", "committed_watermark", "ensure_table", "open_catalog"]

WATERMARK = "k2.watermark_us"
RUN_ID = "k2.run_id"
TARGET_FILE_BYTES = 128 * 1024 * 1024
CATALOG_NAME = "k2"  # Spark's catalog must carry the same name to share a JDBC/SQL catalog


def catalog_properties(settings: Settings) -> dict[str, str]:
    props = {"uri": settings.catalog_uri, "warehouse": settings.warehouse_uri}
    props["type"] = "rest" if settings.iceberg_catalog == "rest" else "sql"
    if settings.iceberg_rest_credential.get_secret_value():
        props["credential"] = settings.iceberg_rest_credential.get_secret_value()
        props["oauth2-server-uri"] = f"{settings.catalog_uri.rstrip('/')}/v1/oauth/tokens"
    if settings.iceberg_s3_endpoint:
        props |= {
            "s3.endpoint": settings.iceberg_s3_endpoint,
            "s3.access-key-id": settings.iceberg_s3_access_key_id,
            "s3.secret-access-key": settings.iceberg_s3_secret_access_key.get_secret_value(),
            "s3.region": settings.iceberg_s3_region,
            "s3.path-style-access": "true",
        }
    return props


def open_catalog(settings: Settings) -> Catalog:
    """The catalog the settings name; the embedded SQLite catalog and warehouse are created on first use."""
    if settings.iceberg_catalog == "sql" and not settings.iceberg_catalog_uri.get_secret_value():
        (settings.iceberg_dir / "warehouse").mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(CATALOG_NAME, **catalog_properties(settings))
    catalog.create_namespace_if_not_exists(NAMESPACE)
    return catalog


def _partition_spec(spec: TableSpec, shape: ColdShape) -> PartitionSpec:
    source = shape.schema.find_field(spec.event_column)
    transform: Any = MonthTransform() if spec.interval_s >= 86400 else DayTransform()
    name = f"{spec.event_column}_{'month' if spec.interval_s >= 86400 else 'day'}"
    return PartitionSpec(PartitionField(source.field_id, 1000, transform, name))


def ensure_table(catalog: Catalog, spec: TableSpec, shape: ColdShape) -> Table:
    """``cold.<name>``: created with the shape, or evolved by name when ClickHouse gained columns.

    An existing table is loaded, not passed to ``create_table_if_not_exists``: that writes a fresh
    metadata file before it finds the table exists, one orphan file per offload run."""
    if catalog.table_exists(spec.identifier):
        table = catalog.load_table(spec.identifier)
    else:
        table = catalog.create_table_if_not_exists(
            spec.identifier,
            schema=shape.schema,
            partition_spec=_partition_spec(spec, shape),
            properties={
                "format-version": "2",
                "write.target-file-size-bytes": str(TARGET_FILE_BYTES),
                "write.metadata.delete-after-commit.enabled": "true",
                "write.metadata.previous-versions-max": "50",
            },
        )
    have = {f.name for f in table.schema().fields}
    if any(f.name not in have for f in shape.schema.fields):
        with table.update_schema() as update:
            update.union_by_name(shape.schema)
        table = catalog.load_table(spec.identifier)
    return table


def committed_watermark(table: Table) -> tuple[int, int | None]:
    """(watermark in epoch µs, the snapshot that committed it); (0, None) before the first offload."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        value = snapshot.summary.additional_properties.get(WATERMARK) if snapshot.summary else None
        if value is not None:
            return int(value), snapshot.snapshot_id
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return 0, None
