"""`k2 down` with a backlog the embedded ClickHouse has not read yet: it reads its topics to the end before it
stops, since the embedded broker keeps nothing across `k2 up`. The backlog is made by freezing ClickHouse
(SIGSTOP) while the trades are published and thawing it just before `k2 down`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.support import running_stack, topic, trade

TOTAL = 200_000
FIRST_ID = 5_000_000


def test_down_right_after_publishing_lands_every_acknowledged_trade(tmp_path: Path) -> None:
    start = time.time_ns() - TOTAL * 1_000_000
    trades = [trade("binance", "DRAIN-USDT", FIRST_ID + i, f"{100 + i % 89}.25", "0.5", "sell", start + i * 1_000_000)
              for i in range(TOTAL)]  # fmt: skip
    with running_stack(tmp_path / "data") as stack:
        clickhouse = stack.pid("clickhouse")
        os.kill(clickhouse, signal.SIGSTOP)
        try:
            stack.produce((topic("binance"), t) for t in trades)  # every one acknowledged by the broker
        finally:
            os.kill(clickhouse, signal.SIGCONT)
        stack.k2("down")
        stack.k2("up", "--detach", "--feeds", "none", "--no-flows")  # a new, empty broker
        stored = [int(r[0]) for r in stack.client().query(
            "SELECT trade_id FROM k2.silver_trades FINAL WHERE canonical_symbol = 'DRAIN-USDT' ORDER BY trade_id_num"
        ).result_rows]  # fmt: skip
    assert stored == list(range(FIRST_ID, FIRST_ID + TOTAL))
