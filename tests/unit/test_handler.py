"""The handler's per-frame path with an in-memory transport and sink: topics, dedup, dead letters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY

from feed_handlers.handler import FeedHandler, HandlerOptions
from feed_handlers.instruments import ExchangeConfig, Instrument
from feed_handlers.metrics import LATENCY_BUCKETS_S, HotStats
from feed_handlers.publisher import Delivery, Message, Publisher
from feed_handlers.state import LastTrade
from tests.unit.test_runner import FakeTransport, until

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class RecordingSink:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.submits: list[tuple[int, bool]] = []  # (messages, backlog) of each submit

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def submit(self, messages: Sequence[Message], *, backlog: bool = False) -> Delivery:
        self.messages.extend(messages)
        self.submits.append((len(messages), backlog))

        async def acked() -> list[BaseException | None]:
            return [None] * len(messages)

        return acked()


def _config(exchange: str, symbols: list[tuple[str, str]], channel: str) -> ExchangeConfig:
    return ExchangeConfig(
        ws_url="ws://127.0.0.1:1", channel=channel, partitions=1,
        symbols=tuple(Instrument(symbol=s, canonical=c) for s, c in symbols),
    )  # fmt: skip


def _run(
    exchange: str, config: ExchangeConfig, frames: list[bytes], last_trades: dict[str, LastTrade] | None = None
) -> list[Message]:
    async def main() -> list[Message]:
        sink = RecordingSink()
        publisher = Publisher(sink, exchange)
        handler = FeedHandler(exchange, config, publisher, FakeTransport(), options=HandlerOptions(), last_trades=last_trades)
        await publisher.start()
        for i, frame in enumerate(frames):
            await handler.on_frame(frame, 1_000_000 + i, 1)
        assert await publisher.flush(5.0)
        await publisher.stop()
        return sink.messages

    return asyncio.run(main())


def _trades(messages: list[Message], topic: str) -> list[dict[str, object]]:
    return [orjson.loads(m.value) for m in messages if m.topic == topic]


def test_coinbase_snapshot_then_updates_publish_each_trade_once_in_order() -> None:
    frames = (FIXTURES / "coinbase" / "advanced_trade.jsonl").read_bytes().splitlines()
    config = _config("coinbase", [("BTC-USD", "BTC-USD"), ("ETH-USD", "ETH-USD")], "market_trades")
    messages = _run("coinbase", config, frames + frames)  # the same frames again: a reconnect snapshot
    trades = _trades(messages, "market.crypto.trades.coinbase")
    ids = [(t["symbol"], int(str(t["trade_id"]))) for t in trades]
    assert len(ids) == len(set(ids))
    for symbol in ("BTC-USD", "ETH-USD"):
        mine = [i for s, i in ids if s == symbol]
        assert mine == sorted(mine)
    raw = [m for m in messages if m.topic == "market.crypto.trades.coinbase.raw"]
    assert [m.value for m in raw] == frames + frames
    assert list(raw[0].headers) == [("ts_received_ns", b"1000000")]
    first = trades[0]
    assert first["side"] == ("buy" if first["maker_side"] == "SELL" else "sell")
    assert all(m.key == str(t["symbol"]).encode() for m, t in zip(
        [m for m in messages if m.topic == "market.crypto.trades.coinbase"], trades, strict=True))  # fmt: skip


def test_bad_frames_go_to_the_dead_letter_topic_with_raw_bytes_and_reason() -> None:
    good = (FIXTURES / "binance" / "trade.jsonl").read_bytes().splitlines()
    bad = [b'{"stream":"bnbbtc@trade","data":{"e":"trade"', b"\xff\xfe", b'{"stream":"x@trade","data":{"e":"trade"}}']
    config = _config("binance", [("BNBBTC", "BNB-BTC")], "trade")
    messages = _run("binance", config, [good[0], *bad, good[1]])
    dlq = [m for m in messages if m.topic == "market.crypto.trades.binance.dlq"]
    assert [m.value for m in dlq] == bad
    assert all(dict(m.headers)["reason"] for m in dlq)
    assert [t["trade_id"] for t in _trades(messages, "market.crypto.trades.binance")] == ["40756030", "60276726"]


def test_restart_with_recovered_ids_publishes_no_duplicate() -> None:
    frames = (FIXTURES / "binance" / "trade.jsonl").read_bytes().splitlines()
    config = _config("binance", [("BNBBTC", "BNB-BTC")], "trade")
    messages = _run("binance", config, frames, last_trades={"BNBBTC": LastTrade(40756030)})
    assert [t["trade_id"] for t in _trades(messages, "market.crypto.trades.binance")] == ["60276726"]


def test_produce_latency_is_bucketed_per_acked_message_in_integer_nanoseconds() -> None:
    stats = HotStats("test-latency")
    try:
        now = 10_000_000_000
        acked = [
            Message("t", b"k", b"v", (), now - 1_000_000),  # exactly 1 ms: the 0.001 bucket (le)
            Message("t", b"k", b"v", (), now - 1_000_001),  # just above: the 0.0025 bucket
            Message("t", b"k", b"v", (), 0),  # raw frame: not timed
            Message("t", b"k", b"v", (), now - 20_000_000_000),  # 20 s: +Inf
        ]
        stats.observe_acked(now, acked)
        expected = [0] * (len(LATENCY_BUCKETS_S) + 1)
        expected[0], expected[1], expected[-1] = 1, 1, 1
        assert stats.latency_counts == expected
        assert stats.latency_sum_ns == 1_000_000 + 1_000_001 + 20_000_000_000
    finally:
        stats.close()


def test_a_disabled_exchange_subscribes_to_nothing_until_it_is_enabled_again() -> None:
    enabled = _config("binance", [("BNBBTC", "BNB-BTC")], "trade")
    disabled = enabled.model_copy(update={"enabled": False})
    trade_frame = (FIXTURES / "binance" / "trade.jsonl").read_bytes().splitlines()[0]

    async def main() -> tuple[list[str], list[Message], list[str], list[object]]:
        transport, sink = FakeTransport(), RecordingSink()
        publisher = Publisher(sink, "binance")
        handler = FeedHandler("binance", disabled, publisher, transport, options=HandlerOptions())
        await publisher.start()
        task = asyncio.create_task(handler.runner.run())
        off = list(handler.runner.symbols)
        await handler.on_frame(trade_frame, 1, 1)  # a stray frame of the disabled symbol: not a trade of ours
        assert await publisher.flush(5.0)
        published_off = [m for m in sink.messages if m.topic == "market.crypto.trades.binance"]
        await handler.apply(enabled)
        conn = await transport.next()
        await until(lambda: bool(conn.sent))
        on, sent = list(handler.runner.symbols), list(conn.sent)
        await handler.runner.stop()
        await asyncio.wait_for(task, 5.0)
        await publisher.stop()
        return off, published_off, on, sent

    off, published_off, on, sent = asyncio.run(main())
    assert (off, published_off) == ([], [])
    assert on == ["BNBBTC"]
    assert sent == [{"method": "SUBSCRIBE", "params": ["bnbbtc@trade"], "id": 1}]


def test_coinbase_sequence_jumps_are_counted_per_connection_apart_from_trade_gaps() -> None:
    line = next(x for x in (FIXTURES / "coinbase" / "advanced_trade.jsonl").read_text().splitlines()
                if '"heartbeats"' in x)  # fmt: skip

    def heartbeat(sequence_num: int) -> bytes:
        frame = orjson.loads(line)
        frame["sequence_num"] = sequence_num
        return orjson.dumps(frame)

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"exchange": "coinbase", **labels}) or 0.0

    config = _config("coinbase", [("BTC-USD", "BTC-USD")], "market_trades")
    before = (sample("k2_feed_frame_gaps_total"), sample("k2_feed_missing_frames_total"),
              sample("k2_feed_trade_gaps_total", symbol="_frames"))  # fmt: skip

    async def main() -> None:
        publisher = Publisher(RecordingSink(), "coinbase")
        handler = FeedHandler("coinbase", config, publisher, FakeTransport(), options=HandlerOptions())
        await publisher.start()
        # connection 1: 7, 8, 11 (9 and 10 lost); connection 2 starts at 0 and is contiguous; 1 again: 12
        for sequence_num, connection in ((7, 1), (8, 1), (0, 2), (11, 1), (1, 2), (2, 2), (12, 1)):
            await handler.on_frame(heartbeat(sequence_num), 1, connection)
        await publisher.stop()

    asyncio.run(main())
    after = (sample("k2_feed_frame_gaps_total"), sample("k2_feed_missing_frames_total"),
             sample("k2_feed_trade_gaps_total", symbol="_frames"))  # fmt: skip
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (1, 2, 0)


def test_a_refused_batch_is_retried_in_order_and_logged_with_its_exchange(caplog: pytest.LogCaptureFixture) -> None:
    class RefusingOnceSink(RecordingSink):
        refused = False

        async def submit(self, messages: Sequence[Message], *, backlog: bool = False) -> Delivery:
            if self.refused:
                return await super().submit(messages, backlog=backlog)
            self.refused = True

            async def refused() -> list[BaseException | None]:
                return [KafkaTimeoutError()] * len(messages)

            return refused()

    messages = [Message("t", b"k", str(i).encode()) for i in range(5)]

    async def main() -> list[Message]:
        sink = RefusingOnceSink()
        publisher = Publisher(sink, "kraken")
        await publisher.start()
        await publisher.publish_many(messages)
        assert await publisher.flush(5.0)
        await publisher.stop()
        return sink.messages

    with caplog.at_level(logging.WARNING, logger="feed_handlers.publisher"):
        delivered = asyncio.run(main())
    assert delivered == messages
    assert [(getattr(r, "exchange", None), r.getMessage().split(" (")[0]) for r in caplog.records] == [
        ("kraken", "kraken: broker did not take 5 messages"),
    ]


def test_only_the_last_submit_of_a_backlog_may_linger() -> None:
    messages = [Message("t", b"k", str(i).encode()) for i in range(12)]

    async def main() -> RecordingSink:
        sink = RecordingSink()
        publisher = Publisher(sink, "binance", batch=5)
        await publisher.start()
        assert publisher.offer(messages)  # buffered before the drain task first runs
        assert await publisher.flush(5.0)
        await publisher.stop()
        return sink

    sink = asyncio.run(main())
    assert sink.messages == messages
    assert sink.submits == [(5, True), (5, True), (2, False)]
