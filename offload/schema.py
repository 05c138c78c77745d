"""ClickHouse column types -> Iceberg schema, and the SELECT list that reads a table in that shape.

Cold tables use types every engine reads (Iceberg v2: Spark, pyiceberg, ClickHouse, Trino). Decimals keep
their precision and scale. Nanosecond timestamps have no v2 type, so a ``DateTime64(9)`` column ``x`` is
stored twice: ``x`` as ``timestamptz`` (microseconds, for pruning and reading) and ``x_ns`` as the exact
epoch nanoseconds, which views use to restore the value bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

__all__ = ["ColdShape", "Column", "cold_shape", "conform"]

_WRAPPERS = re.compile(r"^(?:LowCardinality|Nullable|SimpleAggregateFunction)\((?:\w+,\s*)?(.*)\)$")
_DECIMAL = re.compile(r"^Decimal(?:\d+)?\((\d+),\s*(\d+)\)$")
_DT64 = re.compile(r"^DateTime64\((\d+)(?:,\s*'[^']*')?\)$")
#: converted columns get a temporary name: a ClickHouse alias equal to the column name would shadow the
#: column everywhere else in the query (the `_ns` expression and the WHERE clause would see microseconds)
_US_SUFFIX = "__k2_us"
_SMALL_INTS = {"Int8", "Int16", "Int32", "UInt8", "UInt16"}
_LONGS = {"Int64", "UInt32", "UInt64"}


@dataclass(frozen=True)
class Column:
    name: str
    clickhouse_type: str


@dataclass(frozen=True)
class ColdShape:
    """The Iceberg schema of a cold table and the ClickHouse expressions that produce its columns."""

    schema: Schema
    select: tuple[str, ...]

    @property
    def select_sql(self) -> str:
        return ",\n       ".join(self.select)


def _unwrap(ch_type: str) -> str:
    while (m := _WRAPPERS.match(ch_type)) is not None:
        ch_type = m.group(1)
    return ch_type


def _split_args(inner: str) -> list[str]:
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(inner):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return parts


class _Ids:
    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next


_SIMPLE: dict[str, type[IcebergType]] = {
    "String": StringType, "UUID": StringType, "IPv4": StringType, "IPv6": StringType, "Bool": BooleanType,
    "Float32": DoubleType, "Float64": DoubleType, "Date": DateType, "Date32": DateType,
    **dict.fromkeys(_SMALL_INTS, IntegerType), **dict.fromkeys(_LONGS, LongType),
}  # fmt: skip


def _iceberg_type(ch_type: str, ids: _Ids) -> IcebergType:
    t = _unwrap(ch_type)
    simple = _SIMPLE.get(t)
    if simple is None and t.startswith(("FixedString(", "Enum8(", "Enum16(")):
        simple = StringType
    elif simple is None and t.startswith("DateTime"):
        simple = TimestamptzType
    if simple is not None:
        return simple()
    if (m := _DECIMAL.match(t)) is not None:
        precision, scale = int(m.group(1)), int(m.group(2))
        if precision > 38:
            raise ValueError(f"{ch_type}: Iceberg decimals stop at precision 38")
        return DecimalType(precision, scale)
    if t.startswith("Array("):
        return ListType(ids(), _iceberg_type(t[6:-1], ids), element_required=False)
    if t.startswith("Map("):
        key, value = _split_args(t[4:-1])
        return MapType(ids(), _iceberg_type(key, ids), ids(), _iceberg_type(value, ids), value_required=False)
    raise ValueError(f"no cold-tier mapping for ClickHouse type {ch_type}")


def _select(name: str, ch_type: str) -> list[str]:
    t, q = _unwrap(ch_type), f"`{name}`"
    if t.startswith(("Enum8(", "Enum16(", "UUID", "IPv")):
        return [f"toString({q}) AS {q}"]
    if t in _SMALL_INTS:
        return [f"toInt32({q}) AS {q}"]
    if t in _LONGS:
        return [f"toInt64({q}) AS {q}"]
    if t.startswith("DateTime"):
        m = _DT64.match(t)
        exact = [f"toUnixTimestamp64Nano({q}) AS `{name}_ns`"] if m and int(m.group(1)) > 6 else []
        return [f"toDateTime64({q}, 6, 'UTC') AS `{name}{_US_SUFFIX}`", *exact]
    return [q]


def cold_shape(columns: list[Column], exclude: frozenset[str] = frozenset()) -> ColdShape:
    """The cold table for ``columns`` (as ClickHouse describes the source), minus ``exclude``."""
    ids = _Ids()
    fields: list[NestedField] = []
    select: list[str] = []
    for col in columns:
        if col.name in exclude:
            continue
        field_id = ids()
        fields.append(NestedField(field_id, col.name, _iceberg_type(col.clickhouse_type, ids), required=False))
        exprs = _select(col.name, col.clickhouse_type)
        select.extend(exprs)
        if len(exprs) == 2:
            fields.append(NestedField(ids(), f"{col.name}_ns", LongType(), required=False))
    return ColdShape(Schema(*fields), tuple(select))


def conform(batch: pa.Table, target: pa.Schema) -> pa.Table:
    """``batch`` with the target's column order and types (names must match; casts are lossless or fail)."""
    batch = batch.rename_columns([n.removesuffix(_US_SUFFIX) for n in batch.column_names])
    missing = [f.name for f in target if f.name not in batch.column_names]
    if missing:
        raise ValueError(f"batch lacks cold columns {missing}")
    columns = [batch.column(f.name).cast(f.type, safe=True) for f in target]
    return pa.Table.from_arrays(columns, schema=target)
