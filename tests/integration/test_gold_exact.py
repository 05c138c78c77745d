"""Gold equals recomputation from deduplicated silver, whatever the duplicates, order and merges.

Randomised (seeded) trades over three exchanges, two symbols each and three days are published
shuffled, with a quarter of them sent twice, in several chunks. Every candle of every interval is
compared with an independent Decimal computation in Python, and with the same aggregate computed
by ClickHouse from ``silver_trades FINAL``; then again after forcing every merge, and again after
the duplicates are delivered once more.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any

import pytest

from tests.support import Stack, topic, trade, wait_for

INTERVALS_S = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "1d": 86400}
SYMBOLS = {"binance": ["GXA-USDT", "GXB-USDT"], "kraken": ["GXA-USD", "GXB-USD"], "coinbase": ["GXA-USD", "GXB-USD"]}
WHERE = "canonical_symbol LIKE 'GX%'"
Candle = tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, int, Decimal]


def _random_trades(rng: random.Random, n: int) -> list[dict[str, Any]]:
    now_s = time.time_ns() // 10**9
    start_s = now_s - 3 * 86400
    trades = []
    next_id: dict[tuple[str, str], int] = defaultdict(lambda: rng.randrange(1, 10**9))
    for _ in range(n):
        exchange = rng.choice(list(SYMBOLS))
        canonical = rng.choice(SYMBOLS[exchange])
        next_id[exchange, canonical] += rng.choice([1, 1, 1, 2])
        ts_ns = (start_s + rng.randrange(0, 3 * 86400 - 120)) * 10**9 + rng.randrange(0, 10**9)
        if rng.random() < 0.05:  # same timestamp as another trade: open/close fall back to trade id
            ts_ns = trades[-1]["ts_event_ns"] if trades else ts_ns
        # up to 1e6 with 3-8 decimals, sizes up to 1e4 with 2-8: realistic, and 1d sums fit Decimal(38,18)
        price = Decimal(rng.randrange(1, 10**9)) / Decimal(10 ** rng.randrange(3, 9))
        quantity = Decimal(rng.randrange(1, 10**6)) / Decimal(10 ** rng.randrange(2, 9))
        side = rng.choice(["buy", "sell"])
        trades.append(trade(exchange, canonical, next_id[exchange, canonical], str(price), str(quantity), side, ts_ns))
    return trades


def _oracle(trades: list[dict[str, Any]], interval_s: int) -> dict[tuple[str, str, int], Candle]:
    buckets: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for t in trades:
        bucket = t["ts_event_ns"] // 10**9 // interval_s * interval_s
        buckets[t["exchange"], t["canonical_symbol"], bucket].append(t)
    out = {}
    for key, group in buckets.items():
        group.sort(key=lambda t: (t["ts_event_ns"], int(t["trade_id"])))
        prices = [Decimal(t["price"]) for t in group]
        volume = sum((Decimal(t["quantity"]) for t in group), Decimal(0))
        quote = sum((Decimal(t["price"]) * Decimal(t["quantity"]) for t in group), Decimal(0))
        with localcontext() as ctx:
            ctx.prec = 80
            vwap = (quote / volume).quantize(Decimal("1e-18"), rounding=ROUND_DOWN)
        out[key] = (prices[0], max(prices), min(prices), prices[-1], volume, quote, len(group), vwap)
    return out


def gold(client: Any, interval: str, where: str = WHERE) -> dict[tuple[str, str, int], Candle]:
    rows = client.query(
        f"SELECT exchange, canonical_symbol, toUnixTimestamp(bucket), open, high, low, close, volume, "
        f"quote_volume, trade_count, vwap FROM k2.ohlcv_{interval} WHERE {where}"
    ).result_rows
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}  # type: ignore[misc]


def recomputed_from_silver(client: Any, interval_s: int, where: str = WHERE) -> dict[tuple[str, str, int], Candle]:
    rows = client.query(
        f"""
        SELECT exchange, canonical_symbol, toUnixTimestamp(toStartOfInterval(ts_event, INTERVAL {interval_s} SECOND))
                   AS b,
               argMin(price, (ts_event, trade_id_num)), max(price), min(price),
               argMax(price, (ts_event, trade_id_num)), sum(quantity), sum(quote_volume), count(),
               toDecimal128(toDecimal256(sum(quote_volume), 36) / sum(quantity), 18)
        FROM k2.silver_trades FINAL
        WHERE {where} AND is_valid
        GROUP BY exchange, canonical_symbol, b
        """
    ).result_rows
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}  # type: ignore[misc]


def _check(client: Any, unique: list[dict[str, Any]], when: str) -> None:
    for interval, seconds in INTERVALS_S.items():
        expected = _oracle(unique, seconds)
        candles = gold(client, interval)
        assert candles == expected, f"{interval} gold differs from the Decimal oracle {when}"
        assert recomputed_from_silver(client, seconds) == candles, f"{interval} gold != silver FINAL {when}"


@pytest.mark.parametrize("seed", [20261122])
def test_gold_is_exact_under_duplicates_reordering_and_merges(stack: Stack, seed: int) -> None:
    rng = random.Random(seed)
    unique = _random_trades(rng, 3000)
    duplicates = rng.sample(unique, len(unique) // 4)
    deliveries = unique + duplicates
    rng.shuffle(deliveries)
    client = stack.client()

    chunk = len(deliveries) // 5 + 1
    for i in range(0, len(deliveries), chunk):
        stack.produce((topic(t["exchange"]), t) for t in deliveries[i : i + chunk])

    def bronze_rows() -> int:
        return int(sum(client.command(f"SELECT count() FROM k2.bronze_trades_{ex} WHERE {WHERE}") for ex in SYMBOLS))

    wait_for(lambda: bronze_rows() >= len(deliveries), 60, "every delivery in bronze")
    keys = {(t["exchange"], t["canonical_symbol"], t["trade_id"]) for t in unique}
    assert client.command(f"SELECT count() FROM k2.silver_trades WHERE {WHERE}") == len(keys)
    assert client.command(f"SELECT count() FROM k2.silver_trades FINAL WHERE {WHERE}") == len(keys)
    _check(client, unique, "after ingestion")

    for table in ["silver_trades", *(f"gold_ohlcv_{i}" for i in INTERVALS_S)]:
        client.command(f"OPTIMIZE TABLE k2.{table} FINAL")
    assert client.command(f"SELECT count() FROM k2.gold_ohlcv_1d WHERE {WHERE}") == len(_oracle(unique, 86400))
    _check(client, unique, "after OPTIMIZE FINAL")

    before = bronze_rows()
    stack.produce((topic(t["exchange"]), t) for t in duplicates)
    wait_for(lambda: bronze_rows() >= before + len(duplicates), 60, "redelivered duplicates in bronze")
    _check(client, unique, "after redelivery of duplicates")
