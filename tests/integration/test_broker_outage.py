"""Broker paused mid-stream: the handler keeps its socket, buffers to its bound, then applies
backpressure; when the broker is back every trade the exchange sent is published, once."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from prometheus_client import REGISTRY

from feed_handlers.handler import FeedHandler, HandlerOptions
from feed_handlers.instruments import load_instruments, topic_names
from feed_handlers.publisher import KafkaSink, Publisher
from feed_handlers.replay import FakeExchange, load_capture
from feed_handlers.transport import WebSocketTransport
from k2.topics import ensure_topics
from tests.integration.test_feed_faults import CAPTURES, FAST, _until
from tests.support import read_topic, tansu_broker

PAUSE_S = 4.0
GAUGE = "k2_feed_publish_backpressure"


def test_broker_paused_then_resumed_loses_and_duplicates_nothing() -> None:
    with tansu_broker() as (bootstrap, broker):
        asyncio.run(ensure_topics(bootstrap, dict.fromkeys(topic_names("kraken"), 2)))

        async def run() -> tuple[list[tuple[str, int]], int, float]:
            config = load_instruments(CAPTURES / "instruments.yaml").exchanges["kraken"]  # type: ignore[index]
            publisher = Publisher(KafkaSink(bootstrap, idempotence=False), "kraken", max_buffered=60)
            async with FakeExchange("kraken", load_capture(CAPTURES / "kraken.jsonl"), speed=40.0) as fake:
                handler = FeedHandler("kraken", config, publisher, WebSocketTransport(),
                                      options=HandlerOptions(ws_url=fake.url, runner=FAST))  # fmt: skip
                task = asyncio.create_task(handler.run(handle_signals=False))
                await _until(lambda: len(fake.served) > 30, what="trades flowing")
                os.kill(broker.pid, signal.SIGSTOP)
                paused_at = time.monotonic()
                await _until(lambda: REGISTRY.get_sample_value(GAUGE, {"exchange": "kraken"}) == 1, what="backpressure")
                await asyncio.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))  # the outage itself
                os.kill(broker.pid, signal.SIGCONT)
                await _until(
                    lambda: REGISTRY.get_sample_value(GAUGE, {"exchange": "kraken"}) == 0, what="backpressure released"
                )
                await fake.finished.wait()
                handler.stop()
                await asyncio.wait_for(task, 30)
                connections = fake.connections
            return list(fake.served), connections, publisher.buffered

        served, connections, left = asyncio.run(run())
        published = [(r["symbol"], int(r["trade_id"])) for r in read_topic(bootstrap, "market.crypto.trades.kraken")]
        assert connections == 1, "the exchange socket was kept through the outage"
        assert left == 0
        assert len(published) == len(set(published)), "duplicates on the topic"
        assert set(published) == set(served), "published trades differ from what the exchange sent"
