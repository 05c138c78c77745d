"""Cold tables in ClickHouse SQL: ``cold.<table>`` reads Iceberg natively, ``k2.silver_trades_all``
unions hot and cold.

One ClickHouse table per cold table, reading the Iceberg table at its location (the newest metadata
file there): ``IcebergLocal`` for a warehouse directory (embedded), ``IcebergS3`` for S3 (production,
credentials from the named collection ``K2_CLICKHOUSE_S3_COLLECTION``). The names are the same in both
deployments: ``cold.silver_trades``. ``K2_COLD_CLICKHOUSE=none`` turns this off.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

from pyiceberg.table import Table

from k2.settings import Settings
from offload.tables import TableSpec

__all__ = ["HOT_DAYS_IN_UNION", "expose_cold_table"]

#: the union reads hot for the last 29 whole days: silver's 30-day TTL drops only whole older days
HOT_DAYS_IN_UNION = 29

_SILVER_ALL = """
CREATE OR REPLACE VIEW k2.silver_trades_all AS
SELECT exchange, symbol, canonical_symbol, trade_id, trade_id_num, price, quantity, quote_volume, side,
       ts_event, ts_received, ts_ingested, is_valid, validation_errors, vendor,
       source_topic, source_partition, source_offset, 'hot' AS tier
FROM k2.silver_trades FINAL
WHERE ts_event >= toStartOfDay(now('UTC')) - INTERVAL {days} DAY
UNION ALL
SELECT assumeNotNull(exchange), assumeNotNull(symbol), assumeNotNull(canonical_symbol), assumeNotNull(trade_id),
       toUInt64(assumeNotNull(trade_id_num)), assumeNotNull(price), assumeNotNull(quantity),
       assumeNotNull(quote_volume), assumeNotNull(side),
       fromUnixTimestamp64Nano(assumeNotNull(ts_event_ns), 'UTC'),
       fromUnixTimestamp64Nano(assumeNotNull(ts_received_ns), 'UTC'),
       assumeNotNull(ts_ingested), assumeNotNull(is_valid), arrayMap(x -> assumeNotNull(x), validation_errors),
       mapApply((k, v) -> (k, assumeNotNull(v)), vendor),
       assumeNotNull(source_topic), toUInt32(assumeNotNull(source_partition)),
       toUInt64(assumeNotNull(source_offset)), 'cold' AS tier
FROM cold.silver_trades
WHERE ts_event < toStartOfDay(now('UTC')) - INTERVAL {days} DAY
"""


def table_engine(location: str, settings: Settings) -> tuple[str, dict[str, str]] | None:
    """The ClickHouse engine clause reading the Iceberg table at ``location`` and the values it binds
    (``{name:String}`` query parameters: a path, URL or key never becomes SQL text); None if it cannot."""
    parts = urlsplit(location)
    if parts.scheme in ("file", ""):
        return "IcebergLocal({path:String})", {"path": unquote(parts.path)}
    if parts.scheme in ("s3", "s3a") and settings.iceberg_s3_endpoint:
        url = f"{settings.iceberg_s3_endpoint.rstrip('/')}/{parts.netloc}{parts.path.rstrip('/')}/"
        collection = settings.clickhouse_s3_collection
        if collection:
            # a named collection is an identifier, which a query parameter cannot stand for: checked instead
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", collection):
                raise ValueError(f"K2_CLICKHOUSE_S3_COLLECTION {collection!r} is not a name")
            return f"IcebergS3({collection}, url = {{url:String}})", {"url": url}
        key, secret = settings.iceberg_s3_access_key_id, settings.iceberg_s3_secret_access_key.get_secret_value()
        return "IcebergS3({url:String}, {key:String}, {secret:String})", {"url": url, "key": key, "secret": secret}
    return None


def expose_cold_table(client: Any, settings: Settings, spec: TableSpec, table: Table) -> None:
    """Make ``cold.<name>`` queryable in ClickHouse (idempotent; recreated when the schema grew)."""
    engine = table_engine(table.location(), settings)
    if settings.cold_clickhouse == "none" or engine is None:
        return
    clause, values = engine
    name = {"table": spec.name}
    client.command("CREATE DATABASE IF NOT EXISTS cold")
    columns = {str(r[0]) for r in client.query(
        "SELECT name FROM system.columns WHERE database = 'cold' AND table = {table:String}", parameters=name
    ).result_rows}  # fmt: skip
    wanted = {f.name for f in table.schema().fields}
    if columns and columns != wanted:
        client.command("DROP TABLE IF EXISTS cold.{table:Identifier}", parameters=name)
    client.command(f"CREATE TABLE IF NOT EXISTS cold.{{table:Identifier}} ENGINE = {clause}", parameters=name | values)
    if spec.name == "silver_trades":
        client.command(_SILVER_ALL.format(days=HOT_DAYS_IN_UNION))
