"""Gold candles made whole again after a crash tore a block's materialized-view chain.

A Kafka-table insert writes bronze, then silver, then gold 1m, then the five roll-ups, one part after
the other: a process killed in between leaves silver holding trades whose candles were written at some
levels and not others. The block is redelivered (its offsets were never committed), but silver's dedup
gate rightly keeps those trades from passing twice, so gold would stay short of them for good.

Before a Kafka table consumes again, :func:`repair_gold` finds the silver rows that came from offsets
not committed yet (the suspects: written by an attempt that may not have finished) and recomputes every
candle they touch, at every level, from silver ``FINAL``. Recomputing is always right, so running it
after a clean stop, or twice, changes nothing; a crash during the repair leaves the suspects suspect
and the next start repairs again. 1m is rebuilt first: its insert cascades into the roll-ups, which are
then deleted and rebuilt over the same buckets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

__all__ = ["GOLD_LEVELS", "repair_gold"]

log = logging.getLogger(__name__)

#: gold level -> the interval its buckets span, in 1m-first order
GOLD_LEVELS: dict[str, str] = {
    "1m": "1 MINUTE", "5m": "5 MINUTE", "15m": "15 MINUTE", "30m": "30 MINUTE", "1h": "1 HOUR", "1d": "1 DAY",
}  # fmt: skip

# (query, format, params) -> output bytes
Execute = Callable[[str, str, Mapping[str, str]], bytes]


def _suspects(positions: Mapping[tuple[str, int], int], since_ns: int | None) -> tuple[str, dict[str, str]]:
    """WHERE clause (and its parameters) for silver rows from offsets at or past ``positions`` (any offset
    if empty) inserted at or after ``since_ns`` (any time if None)."""
    params: dict[str, str] = {}
    offsets = []
    for i, ((topic, partition), offset) in enumerate(sorted(positions.items())):
        params.update({f"t{i}": topic, f"p{i}": str(partition), f"o{i}": str(offset)})
        offsets.append(f"(source_topic = {{t{i}:String}} AND source_partition = {{p{i}:UInt32}} "
                       f"AND source_offset >= {{o{i}:UInt64}})")  # fmt: skip
    conditions = ["(" + " OR ".join(offsets) + ")"] if offsets else []
    if since_ns is not None:  # a block is inserted after the previous one was committed
        params["since"] = str(since_ns)
        conditions.insert(0, "ts_ingested >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')")
    return " AND ".join(conditions), params


def repair_gold(execute: Execute, positions: Mapping[tuple[str, int], int], since_ns: int | None) -> int:
    """Recompute the candles of silver rows read from ``positions`` on (topic, partition) -> next offset
    to consume, inserted at or after ``since_ns`` (None: any time). Returns the suspect rows found.

    With no positions, every silver row inserted since ``since_ns`` is a suspect: ``k2 db repair-gold``
    after a clickhouse-server crash, whose Kafka engine has no such repair of its own."""
    if not positions and since_ns is None:
        raise ValueError("repair_gold needs offsets or a time to bound the suspects")
    if execute("EXISTS TABLE k2.silver_trades", "TabSeparated", {}).strip() != b"1":
        return 0
    where, params = _suspects(positions, since_ns)
    found = int(execute(f"SELECT count() FROM k2.silver_trades WHERE {where}", "TabSeparated", params) or b"0")
    if not found:
        return 0
    for level, interval in GOLD_LEVELS.items():
        table = f"k2.gold_ohlcv_{level}"
        bucket = f"toStartOfInterval(ts_event, INTERVAL {interval})"
        touched = (
            f"SELECT DISTINCT exchange, canonical_symbol, toDateTime({bucket}, 'UTC') "
            f"FROM k2.silver_trades WHERE {where}"
        )
        execute(f"ALTER TABLE {table} DELETE WHERE (exchange, canonical_symbol, bucket) IN ({touched}) "
                "SETTINGS mutations_sync = 2", "TabSeparated", params)  # fmt: skip
        execute(
            f"INSERT INTO {table} SELECT exchange, canonical_symbol, toDateTime({bucket}, 'UTC') AS b, "
            "argMinState(price, (ts_event, trade_id_num)), max(price), min(price), "
            "argMaxState(price, (ts_event, trade_id_num)), sum(quantity), sum(quote_volume), count() "
            f"FROM k2.silver_trades FINAL WHERE is_valid AND (exchange, canonical_symbol, b) IN ({touched}) "
            "GROUP BY exchange, canonical_symbol, b",
            "TabSeparated",
            params,
        )
    log.warning("gold repaired: %d silver rows from uncommitted offsets, their candles recomputed at every level",
                found)  # fmt: skip
    return found
