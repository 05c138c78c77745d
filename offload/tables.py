"""Which ClickHouse tables go to the cold tier, and how each one is windowed, keyed and audited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GOLD_INTERVALS", "NAMESPACE", "TableSpec", "all_tables", "select_tables"]

NAMESPACE = "cold"
Layer = Literal["bronze", "silver", "gold"]

#: gold interval name -> seconds; 5m..1d roll up from 1m in ClickHouse, each is offloaded on its own
GOLD_INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "1d": 86400}


@dataclass(frozen=True)
class TableSpec:
    """One offloaded table: ``k2.<name>`` in ClickHouse is ``cold.<name>`` in Iceberg."""

    name: str
    layer: Layer
    #: insertion-time column the watermark advances on (gold windows on silver's ts_ingested)
    ingest_column: str
    #: event-time column: Iceberg partition (by day) and the audit's day
    event_column: str
    #: columns that identify a row; rows already in cold under the same key are never appended again
    key: tuple[str, ...] = ()
    #: summed by the audit, in both stores (bronze keeps the quantity as published text)
    quantity_column: str | None = None
    interval_s: int = 0

    @property
    def source(self) -> str:
        """What the offload reads in ClickHouse: gold is read finalized, through its view."""
        if self.layer == "gold":
            return f"k2.ohlcv_{self.name.removeprefix('gold_ohlcv_')}"
        return f"k2.{self.name}"

    @property
    def identifier(self) -> tuple[str, str]:
        return (NAMESPACE, self.name)


def all_tables(exchanges: tuple[str, ...]) -> list[TableSpec]:
    """Bronze per exchange, then silver, then every gold interval: the order runs execute in."""
    bronze = [
        TableSpec(f"bronze_trades_{x}", "bronze", "ingested_at", "ingested_at", quantity_column="quantity")
        for x in exchanges
    ]
    silver = TableSpec(
        "silver_trades", "silver", "ts_ingested", "ts_event",
        key=("exchange", "canonical_symbol", "trade_id"), quantity_column="quantity",
    )  # fmt: skip
    gold = [
        TableSpec(f"gold_ohlcv_{i}", "gold", "ts_ingested", "bucket",
                  key=("exchange", "canonical_symbol", "bucket"), quantity_column="volume", interval_s=s)
        for i, s in GOLD_INTERVALS.items()
    ]  # fmt: skip
    return [*bronze, silver, *gold]


def select_tables(exchanges: tuple[str, ...], names: list[str] | None) -> list[TableSpec]:
    """The specs named (all when ``names`` is empty); an unknown name is an error listing the known ones."""
    specs = all_tables(exchanges)
    if not names:
        return specs
    known = {s.name: s for s in specs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [s for s in specs if s.name in names]
