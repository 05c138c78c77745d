"""Blocks inserted as key-disjoint parts on two chDB connections at once stay exact in silver and gold.

In-process chDB with the real schema; the blocks are what the Kafka-table consumer builds from fetched
messages. Trades of six symbols, a quarter of them delivered twice, shuffled, in blocks larger than one
part, so every block is split and its parts' materialized-view chains run side by side. Silver must hold
each trade once without FINAL (the dedup gate saw every duplicate, within a part or in an earlier block)
and every gold level must equal its recomputation from silver.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import TopicPartition

from k2.embedded.chdb_engine import ChdbEngine
from k2.embedded.kafka_engine import KafkaTableConsumer, build_block, split_by_key
from k2.embedded.kafka_fetch import Fetched
from k2.gold_repair import GOLD_LEVELS
from tests.support import create_schema, topic, trade

SYMBOLS = ["LNA-USDT", "LNB-USDT", "LNC-USDT", "LND-USDT", "LNE-USDT", "LNF-USDT"]
PART_ROWS = 400


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ChdbEngine]:
    engine = ChdbEngine(tmp_path / "chdb")
    yield engine
    engine.close()


def _deliveries(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    start_ns = (time.time_ns() // 10**9 - 2 * 86400) * 10**9
    next_id = dict.fromkeys(SYMBOLS, 1_000)
    unique = []
    for _ in range(n):
        symbol = rng.choice(SYMBOLS)
        next_id[symbol] += rng.choice([1, 1, 2])
        price = f"{rng.randrange(1, 10**8) / 10**4:.4f}"
        quantity = f"{rng.randrange(1, 10**6) / 10**6:.6f}"
        ts_ns = start_ns + rng.randrange(0, 86400 * 10**9)
        unique.append(trade("binance", symbol, next_id[symbol], price, quantity, rng.choice(["buy", "sell"]), ts_ns))
    duplicates = rng.sample(unique, n // 4)
    return unique, duplicates


def _block(records: list[dict[str, Any]], first_offset: int) -> Fetched:
    n = len(records)
    return Fetched(
        values=[orjson.dumps(r) for r in records],
        keys=[r["symbol"].encode() for r in records],  # as the feed handlers key them
        offsets=list(range(first_offset, first_offset + n)),
        timestamps=[time.time_ns() // 10**6] * n,
        runs=[(TopicPartition(topic("binance"), 0), n)],
    )


def _rows(engine: ChdbEngine, sql: str) -> list[str]:
    return engine.execute(sql, "TabSeparated").data.decode().splitlines()


def _silver(engine: ChdbEngine) -> list[tuple[str, str, Decimal, Decimal]]:
    rows = _rows(engine, "SELECT canonical_symbol, trade_id, price, quantity FROM k2.silver_trades "
                         "WHERE canonical_symbol LIKE 'LN%'")  # fmt: skip
    return sorted((s, i, Decimal(p), Decimal(q)) for s, i, p, q in (r.split("\t") for r in rows))


def _gold_equals_silver(engine: ChdbEngine) -> None:
    for level, interval in GOLD_LEVELS.items():
        gold = _rows(engine, f"SELECT exchange, canonical_symbol, bucket, open, high, low, close, volume, quote_volume, "
                             f"trade_count FROM k2.ohlcv_{level} WHERE canonical_symbol LIKE 'LN%' ORDER BY 1, 2, 3")  # fmt: skip
        recomputed = _rows(
            engine,
            f"SELECT exchange, canonical_symbol, toDateTime(toStartOfInterval(ts_event, INTERVAL {interval}), 'UTC') "
            "AS b, argMin(price, (ts_event, trade_id_num)), max(price), min(price), argMax(price, (ts_event, "
            "trade_id_num)), sum(quantity), sum(quote_volume), count() FROM k2.silver_trades FINAL "
            "WHERE canonical_symbol LIKE 'LN%' AND is_valid GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        assert gold, f"no {level} candles"
        assert gold == recomputed, f"{level} gold differs from its recomputation from silver"


def test_split_blocks_keep_silver_unique_and_gold_exact(engine: ChdbEngine) -> None:
    rng = random.Random(20261206)
    unique, duplicates = _deliveries(rng, 3_000)
    deliveries = unique + duplicates
    rng.shuffle(deliveries)
    spec = create_schema(engine)["binance_trades_queue"]
    consumer = KafkaTableConsumer(engine, dataclasses.replace(spec, max_block_size=PART_ROWS), lanes=2)
    try:
        block_rows = 2 * PART_ROWS
        for first in range(0, len(deliveries), block_rows):
            block = build_block(_block(deliveries[first : first + block_rows], first))
            assert len(split_by_key(block, 2)) == 2  # every block goes in as two parts at once
            consumer.insert(block)
        expected = sorted((t["canonical_symbol"], t["trade_id"], Decimal(t["price"]), Decimal(t["quantity"]))
                          for t in unique)  # fmt: skip
        # no FINAL: the gate let each trade in once, whether its duplicate was in the same block or an earlier one
        assert _silver(engine) == expected
        _gold_equals_silver(engine)

        consumer.insert(build_block(_block(duplicates, len(deliveries))))  # redelivered once more, split again
        assert _silver(engine) == expected
        _gold_equals_silver(engine)
    finally:
        consumer.close()
