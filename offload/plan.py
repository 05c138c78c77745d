"""What one offload run of one table reads: the window and the rows in it.

Windows are on insertion time: ``(watermark, now - safety buffer]`` in ClickHouse's own clock, so a
late trade (old event time, inserted now) lands in the next window instead of being skipped.

- bronze: every row inserted in the window (bronze is the faithful log, duplicates included).
- silver: every trade inserted in the window, once per key, minus keys cold already holds (a redelivered
  duplicate that slipped past silver's insert-time gate is not copied twice).
- gold: the candles that closed in the window, plus closed candles a trade inserted in the window
  changed. Both replace whatever cold holds for the same key, so a late trade corrects cold.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThanOrEqual,
    Or,
    Reference,
)
from pyiceberg.expressions.literals import literal
from pyiceberg.table import Table

from offload.schema import ColdShape, Column, cold_shape, conform
from offload.tables import TableSpec

__all__ = ["clickhouse_now_us", "describe", "drop_already_cold", "extract", "replace_filter", "shape_of"]

#: computed columns of a source that are not data (gold views say whether a candle is closed yet)
_NOT_DATA = frozenset({"is_closed"})
_WINDOW = (
    "{col} > fromUnixTimestamp64Micro({{lo:Int64}}, 'UTC') AND {col} <= fromUnixTimestamp64Micro({{hi:Int64}}, 'UTC')"
)


def describe(client: Any, source: str) -> list[Column]:
    database, _, table = source.rpartition(".")
    rows = client.query(
        "DESCRIBE TABLE {database:Identifier}.{table:Identifier}", parameters={"database": database, "table": table}
    ).result_rows
    return [Column(str(r[0]), str(r[1])) for r in rows if not r[5]]  # r[5]: default_type of ALIAS etc.


def shape_of(client: Any, spec: TableSpec) -> ColdShape:
    return cold_shape(describe(client, spec.source), exclude=_NOT_DATA)


def clickhouse_now_us(client: Any) -> int:
    return int(client.command("SELECT toUnixTimestamp64Micro(now64(6))"))


def _sql(spec: TableSpec, shape: ColdShape) -> str:
    window = _WINDOW.format(col=spec.ingest_column)
    if spec.layer == "bronze":
        return f"SELECT {shape.select_sql} FROM {spec.source} WHERE {window}"
    if spec.layer == "silver":
        return (
            f"SELECT {shape.select_sql} FROM {spec.source} WHERE {window} "
            f"ORDER BY {spec.ingest_column} LIMIT 1 BY {', '.join(spec.key)}"
        )
    closes = "bucket + toIntervalSecond({n:UInt32})"
    touched = (
        "SELECT DISTINCT exchange, canonical_symbol, toDateTime(toStartOfInterval(ts_event, "
        f"toIntervalSecond({{n:UInt32}})), 'UTC') FROM k2.silver_trades WHERE is_valid AND {window}"
    )
    return (
        f"SELECT {shape.select_sql} FROM {spec.source} "
        f"WHERE ({closes} > fromUnixTimestamp64Micro({{lo:Int64}}, 'UTC') "
        f"       AND {closes} <= fromUnixTimestamp64Micro({{hi:Int64}}, 'UTC')) "
        f"   OR ((exchange, canonical_symbol, bucket) IN ({touched}) "
        f"       AND {closes} <= fromUnixTimestamp64Micro({{hi:Int64}}, 'UTC')) "
        "ORDER BY exchange, canonical_symbol, bucket"
    )


def extract(client: Any, spec: TableSpec, shape: ColdShape, target: pa.Schema, lo_us: int, hi_us: int) -> pa.Table:
    """The window's rows from ClickHouse as Arrow, in the cold table's column order and types."""
    params: dict[str, int] = {"lo": lo_us, "hi": hi_us, "n": spec.interval_s}
    batch = client.query_arrow(
        _sql(spec, shape), parameters=params, settings={"output_format_arrow_string_as_string": 1}
    )
    return conform(batch, target)


def drop_already_cold(table: Table, batch: pa.Table, spec: TableSpec) -> pa.Table:
    """``batch`` without the rows whose key cold already holds (looked up in the batch's event-time range)."""
    if spec.layer != "silver" or batch.num_rows == 0 or table.current_snapshot() is None:
        return batch  # gold replaces by key instead; bronze is the log, duplicates included
    times = batch.column(spec.event_column)
    low, high = pc.min(times).value, pc.max(times).value
    column = Reference(spec.event_column)
    scan_filter = And(
        GreaterThanOrEqual(term=column, value=literal(_micros(low))),
        LessThanOrEqual(term=column, value=literal(_micros(high))),
    )
    cold = table.scan(row_filter=scan_filter, selected_fields=spec.key).to_arrow()
    if cold.num_rows == 0:
        return batch
    keys = conform(cold, pa.schema([batch.schema.field(k) for k in spec.key]))
    # join on the keys alone (Arrow joins refuse list/map payload columns), then take the survivors
    ours = batch.select(list(spec.key)).append_column("__row", pa.array(range(batch.num_rows), pa.int64()))
    kept = ours.join(keys, keys=list(spec.key), join_type="left anti", use_threads=False)
    survivors = sorted(kept.column("__row").to_pylist())
    return batch.take(pa.array(survivors, pa.int64()))


def replace_filter(batch: pa.Table, spec: TableSpec) -> BooleanExpression | None:
    """For gold: the cold rows the batch replaces, as an exact filter on (exchange, symbol, bucket)."""
    if spec.layer != "gold" or batch.num_rows == 0:
        return None
    groups: dict[tuple[str, str], list[int]] = {}
    for exchange, symbol, bucket in zip(
        batch.column("exchange").to_pylist(),
        batch.column("canonical_symbol").to_pylist(),
        batch.column("bucket").cast(pa.int64()).to_pylist(),
        strict=True,
    ):
        groups.setdefault((exchange, symbol), []).append(bucket)
    parts: list[BooleanExpression] = [
        And(
            EqualTo(term=Reference("exchange"), value=literal(ex)),
            EqualTo(term=Reference("canonical_symbol"), value=literal(sym)),
            In(term=Reference("bucket"), values={literal(b) for b in buckets}),
        )
        for (ex, sym), buckets in groups.items()
    ]
    return parts[0] if len(parts) == 1 else Or(*parts)


def _micros(value: Any) -> int:
    return int(pa.scalar(value, pa.timestamp("us", tz="UTC")).cast(pa.int64()).as_py())
