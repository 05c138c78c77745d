"""A restarted handler reads its last trades back from the normalized topic on a real broker (Tansu)."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaProducer

from feed_handlers.handler import FeedHandler, HandlerOptions
from feed_handlers.instruments import ExchangeConfig, Instrument, topic_names
from feed_handlers.publisher import KafkaSink, Publisher
from feed_handlers.recovery import recover_last_trades
from feed_handlers.state import ConfirmedGap, LastTrade
from k2.topics import ensure_topics
from tests.support import read_topic, tansu_broker

TOPIC = "market.crypto.trades.binance"


def _record(symbol: str, trade_id: int, stream_type: str = "trade") -> bytes:
    return orjson.dumps({
        "exchange": "binance", "symbol": symbol, "canonical_symbol": f"{symbol}-X", "trade_id": str(trade_id),
        "price": "1.5", "quantity": "2", "side": "buy", "ts_event_ns": _ts(trade_id, stream_type),
        "ts_received_ns": 1, "stream_type": stream_type,
    })  # fmt: skip


def _ts(trade_id: int, stream_type: str = "trade") -> int:
    return 1_795_000_000_000_000_000 + trade_id * 1_000_000 + (7 if stream_type == "aggTrade" else 0)


async def _produce(bootstrap: str, partition: int, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for value in values:
            await producer.send(TOPIC, value, key=b"k", partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def test_last_trade_per_symbol_of_the_handlers_stream_found_beyond_the_tail() -> None:
    # partition 0: a quiet symbol QUIET early, then 3,000 trades of BUSY with an aggTrade of BUSY every 10th;
    # partition 1: ONE's three trades and a record that is not JSON
    p0 = [_record("QUIET", i) for i in range(500, 510)]
    for i in range(1, 3001):
        p0.append(_record("BUSY", i))
        if i % 10 == 0:
            p0.append(_record("BUSY", 900_000 + i, "aggTrade"))
    p1 = [_record("ONE", 7), _record("ONE", 9), b"not json", _record("ONE", 8)]
    with tansu_broker() as (bootstrap, _):
        asyncio.run(ensure_topics(bootstrap, {TOPIC: 2}))
        asyncio.run(_produce(bootstrap, 0, p0))
        asyncio.run(_produce(bootstrap, 1, p1))

        def recover(*symbols: str, **kwargs: object) -> dict[str, LastTrade]:
            return asyncio.run(recover_last_trades(bootstrap, TOPIC, symbols, tail=1_000, **kwargs))  # type: ignore[arg-type]

        trades = recover("BUSY", "QUIET", "ONE", "NEVER", stream_type="trade")
        aggregated = recover("BUSY", stream_type="aggTrade")
        bounded = recover("BUSY", "QUIET", "ONE", stream_type="trade", max_tail=1_000)
        missing_topic = asyncio.run(recover_last_trades(bootstrap, "market.crypto.trades.nowhere", ["BUSY"]))

    assert trades == {
        "BUSY": LastTrade(3000, _ts(3000)),
        "QUIET": LastTrade(509, _ts(509)),  # 3,300 messages before the end: read on the second, longer pass
        "ONE": LastTrade(9, _ts(9)),  # the highest id, not the last record
    }
    assert aggregated == {"BUSY": LastTrade(903_000, _ts(903_000, "aggTrade"))}
    assert bounded == {"BUSY": LastTrade(3000, _ts(3000)), "ONE": LastTrade(9, _ts(9))}  # QUIET past the bound
    assert missing_topic == {}


def _frame(trade_id: int) -> bytes:
    """A Binance @trade frame as the venue sends it (tests/fixtures/binance/trade.jsonl), with this id."""
    ms = 1_795_000_000_000 + trade_id
    return orjson.dumps({"stream": "bnbbtc@trade", "data": {
        "e": "trade", "E": ms + 5, "s": "BNBBTC", "t": trade_id, "p": "0.00426990", "q": "33.82000000",
        "b": 133829535, "a": 133829504, "T": ms, "m": False, "M": True}})  # fmt: skip


def test_restarted_handler_publishes_no_duplicate_and_dates_its_first_gap_from_the_recovered_trade() -> None:
    config = ExchangeConfig(ws_url="ws://127.0.0.1:1", channel="trade", partitions=2,
                            symbols=(Instrument(symbol="BNBBTC", canonical="BNB-BTC"),))  # fmt: skip

    async def run(bootstrap: str, ids: range | list[int]) -> FeedHandler:
        last = await recover_last_trades(bootstrap, TOPIC, ["BNBBTC"], stream_type="trade")
        publisher = Publisher(KafkaSink(bootstrap, idempotence=False), "binance")
        handler = FeedHandler("binance", config, publisher, transport=None,  # type: ignore[arg-type]
                              options=HandlerOptions(gap_grace_s=0.0), last_trades=last)  # fmt: skip
        await publisher.start()
        for trade_id in ids:
            await handler.on_frame(_frame(trade_id), 1_000 + trade_id, 1)
        assert await publisher.flush(30.0)
        await publisher.stop()
        return handler

    with tansu_broker() as (bootstrap, _):
        asyncio.run(ensure_topics(bootstrap, dict.fromkeys(topic_names("binance"), 2)))
        asyncio.run(run(bootstrap, range(100, 150)))
        # restarted: the venue resends 140..149 (already published), then 152.. (150 and 151 never come)
        second = asyncio.run(run(bootstrap, [*range(140, 150), *range(152, 161)]))
        published = [int(r["trade_id"]) for r in read_topic(bootstrap, TOPIC)]

    assert sorted(published) == [*range(100, 150), *range(152, 161)]
    (gap,) = second.state.confirmed_gaps(float("inf"))
    ns = 1_000_000
    assert gap == ConfirmedGap("BNBBTC", 150, 151, after_ns=(1_795_000_000_000 + 149) * ns,
                               before_ns=(1_795_000_000_000 + 152) * ns)  # fmt: skip
