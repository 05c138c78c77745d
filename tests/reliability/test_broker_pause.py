"""The broker frozen (SIGSTOP) while three handlers publish and the embedded ClickHouse consumes, then
thawed (SIGCONT): silver FINAL ends with every trade the exchanges sent, each once.

The suite pauses for ``PAUSE_S``; ``bench/faults.py --broker-pause-s 30`` runs the same scenario for 30 s
(longer than the producer's request timeout, so produce requests time out and are retried). The handlers'
publish buffer is kept small here so that it fills during the outage and the handlers stop reading their
sockets (backpressure) with the real broker and ClickHouse behind them; ``tests/integration/test_broker_outage.py``
checks the backpressure gauge itself against a bare broker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.reliability.feeds import FeedRun, Figures, feed, settle
from tests.support import Stack, running_stack

PAUSE_S = 8.0
GAUGE = "k2_feed_publish_backpressure"
VENUES = ("binance", "kraken", "coinbase")
REPLAYS = {"binance": False, "kraken": True, "coinbase": True}


@dataclass(frozen=True)
class Outcome:
    figures: dict[str, Figures]
    backpressure: dict[str, bool]  # the handler's buffer was full (reads paused) when the broker was thawed
    recovered_s: float  # from SIGCONT until silver held every trade sent before it


def pause_broker(stack: Stack, pause_s: float, *, max_buffered: int = 300) -> Outcome:
    """Run the scenario on ``stack``."""
    client = stack.client()

    def in_silver(prefix: str) -> int:
        return int(client.command(
            "SELECT count() FROM k2.silver_trades FINAL WHERE startsWith(canonical_symbol, {p:String})",
            parameters={"p": prefix},
        ))  # fmt: skip

    async def scenario() -> tuple[list[FeedRun], dict[str, bool], float]:
        async with (
            feed(stack, "binance", "BPB", max_buffered=max_buffered) as binance,
            feed(stack, "kraken", "BPK", max_buffered=max_buffered) as kraken,
            feed(stack, "coinbase", "BPC", max_buffered=max_buffered) as coinbase,
        ):
            runs = [binance, kraken, coinbase]
            broker = stack.pid("broker")
            os.kill(broker, signal.SIGSTOP)
            try:
                await asyncio.sleep(pause_s)  # the outage itself
                backpressure = {r.exchange: REGISTRY.get_sample_value(GAUGE, {"exchange": r.exchange}) == 1
                                for r in runs}  # fmt: skip
            finally:
                os.kill(broker, signal.SIGCONT)
            resumed = time.monotonic()
            sent = {r.prefix: len(r.fake.served) for r in runs}
            while not all(await asyncio.to_thread(lambda: [in_silver(p) >= n for p, n in sent.items()])):
                assert time.monotonic() - resumed < 120, "silver did not catch up within 120 s of SIGCONT"
                await asyncio.sleep(0.2)
            recovered_s = time.monotonic() - resumed
            for run in runs:
                await run.finish()
        return runs, backpressure, recovered_s

    runs, backpressure, recovered_s = asyncio.run(scenario())
    return Outcome({r.exchange: settle(stack, r) for r in runs}, backpressure, recovered_s)


@pytest.mark.integration
def test_broker_frozen_then_thawed_loses_and_duplicates_nothing_in_silver(tmp_path: Path) -> None:
    started = time.monotonic()
    with running_stack(tmp_path / "data") as stack:
        outcome = pause_broker(stack, PAUSE_S)
    for exchange, f in outcome.figures.items():
        print(f"broker SIGSTOP {PAUSE_S:.0f}s: {exchange}: {f.line()} published_twice={f.published_twice} "
              f"backpressure={outcome.backpressure[exchange]}")  # fmt: skip
    print(f"broker SIGSTOP {PAUSE_S:.0f}s: silver caught up {outcome.recovered_s:.1f}s after SIGCONT; "
          f"run={time.monotonic() - started:.1f}s")  # fmt: skip

    assert all(outcome.backpressure.values()), outcome.backpressure
    for exchange, f in outcome.figures.items():
        assert (f.duplicated, f.duplicated_final) == (0, 0), exchange
        if REPLAYS[exchange]:
            assert not f.lost_keys, (exchange, sorted(f.lost_keys)[:5])
        assert f.lost_keys <= f.unseen_keys | f.outside_span_keys, exchange
        assert f.missing_counted == f.unseen, exchange
    assert outcome.recovered_s < 60
