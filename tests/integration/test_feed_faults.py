"""Handlers against local fake exchanges that misbehave: they recover, never duplicate, never lose a
trade the server delivered on a connection that stayed up, and count what they could not see."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import orjson

from feed_handlers.exchanges import VENUES
from feed_handlers.handler import FeedHandler, HandlerOptions
from feed_handlers.instruments import load_instruments
from feed_handlers.publisher import Publisher
from feed_handlers.replay import FakeExchange, load_capture
from feed_handlers.replay.rest import FakeRest
from feed_handlers.runner import RunnerSettings
from feed_handlers.transport import WebSocketTransport
from tests.support import REPO
from tests.unit.test_handler import RecordingSink

CAPTURES = REPO / "captures"
FAST = RunnerSettings(reconnect_backoff_initial_s=0.05, reconnect_backoff_max_s=0.2, healthy_after_s=0.5)


async def _until(predicate, limit_s: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _published(sink: RecordingSink, exchange: str) -> list[tuple[str, int]]:
    topic = f"market.crypto.trades.{exchange}"
    return [
        (r["symbol"], int(r["trade_id"])) for r in (orjson.loads(m.value) for m in sink.messages if m.topic == topic)
    ]


async def _scenario(exchange: str, faults: list[str]) -> tuple[FakeExchange, RecordingSink, FeedHandler]:
    config = load_instruments(CAPTURES / "instruments.yaml").exchanges[exchange]  # type: ignore[index]
    venue = dataclasses.replace(VENUES[exchange], silence_timeout_s=0.5 if exchange != "binance" else None,
                                max_messages_per_s=100.0)  # fmt: skip
    sink = RecordingSink()
    async with FakeExchange(exchange, load_capture(CAPTURES / f"{exchange}.jsonl"), speed=30.0, loop=True,
                            heartbeat_interval_s=0.1) as fake:  # fmt: skip
        handler = FeedHandler(
            exchange,
            config,
            Publisher(sink, exchange),
            WebSocketTransport(),
            options=HandlerOptions(ws_url=fake.url, gap_grace_s=0.3, runner=FAST, venue=venue),
        )
        task = asyncio.create_task(handler.run(handle_signals=False))
        for fault in faults:
            before = len(_published(sink, exchange))
            await _until(lambda b=before: len(_published(sink, exchange)) > b + 20, what=f"trades before {fault}")
            connections = fake.connections
            if fault == "drop":
                await fake.drop_connections()
            elif fault == "close":
                await fake.close_all(1001, "going away")
            elif fault == "silence":
                fake.pause(1.5)
            elif fault == "garbage":
                await fake.send_raw("this is not json {")
                await fake.send_raw('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}')
            elif fault == "shutdown":
                await fake.send_server_shutdown()
            if fault != "garbage":
                await _until(lambda c=connections: fake.connections > c, what=f"reconnect after {fault}")
        fake.pause_feed()
        await asyncio.sleep(0.5)  # let in-flight frames arrive; the feed is paused so nothing new comes
        handler.stop()
        await asyncio.wait_for(task, 15)
    return fake, sink, handler


def _check(exchange: str, fake: FakeExchange, sink: RecordingSink, handler: FeedHandler, *, snapshots: bool) -> None:
    published = _published(sink, exchange)
    assert len(published) == len(set(published)), "a trade was published twice"
    lost = set(fake.served) - set(published)
    if snapshots:  # a reconnect snapshot re-delivers what a cut connection swallowed
        assert not lost, f"trades the server sent and the handler never published: {sorted(lost)[:5]}"
    else:  # Binance never replays: what a cut swallowed must sit inside a gap the handler reported
        gaps = {s: handler.state.open_gaps(s) for s in {s for s, _ in lost}}
        for symbol, trade_id in lost:
            assert any(lo <= trade_id <= hi for lo, hi in gaps[symbol]), (symbol, trade_id)


def test_kraken_recovers_from_drops_closes_silence_and_garbage() -> None:
    fake, sink, handler = asyncio.run(_scenario("kraken", ["drop", "close", "silence", "garbage", "drop"]))
    _check("kraken", fake, sink, handler, snapshots=True)
    assert fake.connections >= 5
    dead = [m.value for m in sink.messages if m.topic == "market.crypto.trades.kraken.dlq"]
    assert dead == [b"this is not json {", b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}']
    subscribes = [c for c in fake.controls if c.get("method") == "subscribe"]
    assert all(c["params"]["snapshot"] is True for c in subscribes) and len(subscribes) == fake.connections


def test_coinbase_recovers_and_resubscribes_with_heartbeats() -> None:
    fake, sink, handler = asyncio.run(_scenario("coinbase", ["drop", "silence", "close"]))
    _check("coinbase", fake, sink, handler, snapshots=True)
    channels = [c["channel"] for c in fake.controls if c.get("type") == "subscribe"]
    assert channels == ["market_trades", "heartbeats"] * fake.connections


def test_binance_reconnects_on_drop_and_server_shutdown_and_reports_gaps() -> None:
    fake, sink, handler = asyncio.run(_scenario("binance", ["drop", "shutdown", "close"]))
    _check("binance", fake, sink, handler, snapshots=False)
    assert fake.connections >= 4
    assert all(c["method"] == "SUBSCRIBE" and all(p.lower().endswith("@aggtrade") for p in c["params"])
               for c in fake.controls if c.get("method") == "SUBSCRIBE")  # fmt: skip


def test_binance_gap_from_a_disconnection_is_backfilled_over_rest() -> None:
    async def scenario() -> tuple[FakeExchange, RecordingSink, list[str]]:
        config = load_instruments(CAPTURES / "instruments.yaml").exchanges["binance"]  # type: ignore[index]
        sink = RecordingSink()
        slow = RunnerSettings(reconnect_backoff_initial_s=0.6, reconnect_backoff_max_s=0.8)
        async with FakeExchange("binance", load_capture(CAPTURES / "binance.jsonl"), speed=2.0) as fake, \
                FakeRest(fake) as rest:  # fmt: skip
            handler = FeedHandler("binance", config, Publisher(sink, "binance"), WebSocketTransport(),
                                  options=HandlerOptions(ws_url=fake.url, gap_grace_s=0.3, runner=slow,
                                                         backfill=True, rest_url=rest.url))  # fmt: skip
            task = asyncio.create_task(handler.run(handle_signals=False))
            await _until(lambda: len(_published(sink, "binance")) > 20, what="trades")
            await fake.drop_connections()  # trades replayed while we are away are only in REST now
            await fake.finished.wait()
            await _until(lambda: bool(rest.requests), what="a backfill request")
            await asyncio.sleep(1.0)  # confirmed gaps are fetched once a second
            handler.stop()
            await asyncio.wait_for(task, 15)
            return fake, sink, rest.requests

    fake, sink, requests = asyncio.run(scenario())
    published = _published(sink, "binance")
    assert len(published) == len(set(published))
    assert all(r.startswith("/api/v3/aggTrades?symbol=") for r in requests)
    for symbol, history in fake.history.items():
        first = min(i for s, i in published if s == symbol) if any(s == symbol for s, _ in published) else None
        if first is None:
            continue
        got = sorted(i for s, i in published if s == symbol)
        want = sorted(s.trade_id for s in history if first <= s.trade_id <= got[-1])
        assert got == want, f"{symbol}: ids missing after backfill {sorted(set(want) - set(got))[:5]}"
