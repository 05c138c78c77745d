"""A block whose MV chain a crash tore (silver written, some gold levels not) is made whole by the
repair a Kafka table runs before it consumes again: every candle its uncommitted rows touch is
recomputed from silver, at every level, and nothing else changes."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from k2.gold_repair import GOLD_LEVELS, repair_gold
from tests.integration.test_gold_exact import INTERVALS_S, gold, recomputed_from_silver
from tests.support import Stack, topic, trade, wait_for

WHERE = "canonical_symbol = 'TORN-USDT'"
N = 600


def test_torn_chain_is_recomputed_from_silver_at_every_level(stack: Stack) -> None:
    before = datetime.now(UTC)
    start = (time.time_ns() // 60_000_000_000 - 90) * 60_000_000_000  # 90 minutes ago, on a minute
    trades = [trade("binance", "TORN-USDT", 7_000_000 + i, f"{100 + i % 13}.5", f"0.{i % 9 + 1}", "buy",
                    start + i * 9_000_000_000) for i in range(N)]  # fmt: skip  # 90 minutes, one every 9 s
    stack.produce((topic("binance"), t) for t in trades)
    client = stack.client()
    wait_for(lambda: client.command(f"SELECT sum(trade_count) FROM k2.ohlcv_1m WHERE {WHERE}") == N, 60, "gold")
    whole = {level: gold(client, level, WHERE) for level in INTERVALS_S}

    late = start + 2 * N // 3 * 9_000_000_000

    def tear() -> None:  # what a SIGKILL between parts leaves: the 1m and 1h parts of the last third never written
        for level in ("1m", "1h"):
            client.command(f"ALTER TABLE k2.gold_ohlcv_{level} DELETE WHERE {WHERE} AND bucket >= "
                           f"toStartOfInterval(fromUnixTimestamp64Nano({late}), INTERVAL {GOLD_LEVELS[level]}) "
                           "SETTINGS mutations_sync = 2")  # fmt: skip
        assert gold(client, "1m", WHERE) != whole["1m"]
        assert gold(client, "1h", WHERE) != whole["1h"]

    # by hand, as after a clickhouse-server crash: every row inserted since a time
    tear()
    printed = stack.k2("db", "repair-gold", "--since", before.isoformat()).stdout
    assert re.fullmatch(r"recomputed the gold candles of [0-9]+ silver rows inserted since .+\n", printed), printed
    assert {level: gold(client, level, WHERE) for level in INTERVALS_S} == whole

    # as the embedded Kafka engine does before consuming again
    tear()

    # the uncommitted offsets: those of the last third (the consumer committed the rest)
    first_torn = {
        (t, int(p)): int(o)
        for t, p, o in client.query(
            f"SELECT source_topic, source_partition, min(source_offset) FROM k2.silver_trades "
            f"WHERE {WHERE} AND ts_event >= fromUnixTimestamp64Nano({late}) GROUP BY 1, 2"
        ).result_rows
    }

    def execute(sql: str, fmt: str, params: Mapping[str, str]) -> bytes:
        data: bytes = client.raw_query(sql, parameters=dict(params), fmt=fmt)
        return data

    assert repair_gold(execute, first_torn, None) >= N // 3
    for level, seconds in INTERVALS_S.items():
        assert gold(client, level, WHERE) == recomputed_from_silver(client, seconds, WHERE) == whole[level], level

    # nothing past the committed offsets: nothing to repair, nothing changed
    beyond = {tp: 10**12 for tp in first_torn}
    assert repair_gold(execute, beyond, None) == 0
    assert repair_gold(execute, first_torn, time.time_ns()) == 0  # committed after they were inserted
    assert {level: gold(client, level, WHERE) for level in INTERVALS_S} == whole
