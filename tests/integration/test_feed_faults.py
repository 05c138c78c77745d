"""Handlers against local fake exchanges that misbehave: they recover, never duplicate, never lose a
trade the server delivered on a connection that stayed up, and count what they could not see."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

import orjson
import pytest
from prometheus_client import REGISTRY

from feed_handlers.backfill import backfill
from feed_handlers.errors import ParseError
from feed_handlers.exchanges import VENUES
from feed_handlers.handler import FeedHandler, HandlerOptions, canonical_map
from feed_handlers.instruments import load_instruments
from feed_handlers.publisher import Publisher
from feed_handlers.replay import FakeExchange, load_capture
from feed_handlers.replay.rest import FakeRest
from feed_handlers.runner import RunnerSettings
from feed_handlers.state import ConfirmedGap
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


def _received(sink: RecordingSink, exchange: str, canonical: dict[str, str]) -> set[tuple[str, int]]:
    """Trades in the frames the handler received over its WebSockets (its raw-frame topic), parsed again."""
    topic = f"market.crypto.trades.{exchange}.raw"
    received: set[tuple[str, int]] = set()
    for message in sink.messages:
        if message.topic == topic:
            with contextlib.suppress(ParseError):  # dead-lettered frames carry no trade
                result = VENUES[exchange].parse(message.value, ts_received_ns=1, canonical=canonical)
                received.update((t.symbol, int(t.trade_id)) for t in result.trades)
    return received


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


# Per venue: replay speed, and how long the handler stays away after its connection is cut. Kraken and
# Coinbase resend their last 50/100 trades on subscribe: the absence must outlast that many trades, so the
# gap's older part is only on REST.
BACKFILL_CASES = {"binance": (2.0, 1.5), "kraken": (40.0, 3.0), "coinbase": (40.0, 2.0)}
BACKFILL_PATHS = {"binance": "/api/v3/aggTrades?symbol=", "kraken": "/0/public/Trades?pair=",
                  "coinbase": "/api/v3/brokerage/market/products/"}  # fmt: skip


@pytest.mark.parametrize("exchange", list(BACKFILL_CASES))
def test_gap_from_a_disconnection_is_backfilled_over_rest(exchange: str) -> None:
    speed, away_s = BACKFILL_CASES[exchange]
    config = load_instruments(CAPTURES / "instruments.yaml").exchanges[exchange]  # type: ignore[index]

    def count(name: str) -> float:
        return sum(REGISTRY.get_sample_value(name, {"exchange": exchange, "symbol": i.symbol}) or 0.0
                   for i in config.symbols)  # fmt: skip

    def complete(sink: RecordingSink, fake: FakeExchange) -> bool:
        """Every trade the venue released between a symbol's first and last published id is published."""
        published = _published(sink, exchange)
        for symbol, history in fake.history.items():
            got = sorted(i for s, i in published if s == symbol)
            if got and got != sorted(t.trade_id for t in history if got[0] <= t.trade_id <= got[-1]):
                return False
        return True

    before = (count("k2_feed_backfilled_trades_total"), count("k2_feed_missing_trades_total"))

    async def scenario() -> tuple[RecordingSink, list[str]]:
        sink = RecordingSink()
        away = RunnerSettings(reconnect_backoff_initial_s=away_s, reconnect_backoff_max_s=away_s * 1.3)
        async with FakeExchange(exchange, load_capture(CAPTURES / f"{exchange}.jsonl"), speed=speed,
                                loop=True) as fake, FakeRest(fake) as rest:  # fmt: skip
            handler = FeedHandler(exchange, config, Publisher(sink, exchange), WebSocketTransport(),
                                  options=HandlerOptions(ws_url=fake.url, gap_grace_s=0.3, runner=away,
                                                         backfill=True, rest_url=rest.url))  # fmt: skip
            task = asyncio.create_task(handler.run(handle_signals=False))
            await _until(lambda: len(_published(sink, exchange)) > 20, what="trades")
            await fake.drop_connections()  # trades released while we are away are only on REST now
            await _until(lambda: bool(rest.requests), what="a backfill request")
            await _until(lambda: complete(sink, fake), limit_s=30, what="every released trade published")
            handler.stop()
            await asyncio.wait_for(task, 15)
            return sink, rest.requests

    sink, requests = asyncio.run(scenario())
    published = _published(sink, exchange)
    # What the handler took in over the WebSocket is in its raw-frame topic. Not fake.served: a trade the
    # fake wrote just before it dropped the connection counts as served yet may never have arrived.
    over_ws = _received(sink, exchange, canonical_map(config))
    from_rest = [key for key in published if key not in over_ws]
    backfilled = count("k2_feed_backfilled_trades_total") - before[0]
    missing = count("k2_feed_missing_trades_total") - before[1]
    print(f"{exchange}: {len(published)} published, {len(from_rest)} only on REST, {len(requests)} REST requests")
    assert len(published) == len(set(published))
    assert requests and all(r.startswith(BACKFILL_PATHS[exchange]) for r in requests)
    assert from_rest, "the absence outlasted what the venue resends on subscribe"
    assert (backfilled, missing) == (len(from_rest), 0)


def test_coinbase_backfill_pages_back_through_a_gap_longer_than_one_page() -> None:
    async def scenario() -> tuple[list[int], list[int], list[str]]:
        config = load_instruments(CAPTURES / "instruments.yaml").exchanges["coinbase"]  # type: ignore[index]
        # paced (a few hundred trades a second), since the REST window is in whole seconds: pages end at a second
        async with FakeExchange("coinbase", load_capture(CAPTURES / "coinbase.jsonl"), speed=200.0,
                                loop=True) as fake, FakeRest(fake) as rest:  # fmt: skip
            handler = FeedHandler("coinbase", config, Publisher(RecordingSink(), "coinbase"), WebSocketTransport(),
                                  options=HandlerOptions(ws_url=fake.url))  # fmt: skip
            task = asyncio.create_task(handler.run(handle_signals=False))  # a subscriber: the feed runs
            await fake.wait_until(lambda: len(fake.history.get("BTC-USD", ())) > 2_200, timeout_s=60)
            handler.stop()
            await asyncio.wait_for(task, 15)
            history = list(fake.history["BTC-USD"])
            before, inside, after = history[100], history[101:2_101], history[2_101]  # 2,000 trades: several pages
            gap = ConfirmedGap("BTC-USD", inside[0].trade_id, inside[-1].trade_id, before.ts_ns, after.ts_ns)
            got = await backfill("coinbase", rest.url, "market_trades", "BTC-USD", gap, 1)
            return [int(t.trade_id) for t in got], [t.trade_id for t in inside], rest.requests

    got, want, requests = asyncio.run(scenario())
    assert got == want
    assert len(requests) >= 3


def test_coinbase_subscribes_inside_the_venues_deadline() -> None:
    """The fake closes a connection that has not subscribed within its deadline, as Coinbase does after 5 s;
    here 0.3 s, with two symbols and the heartbeats channel to subscribe at the venue's message rate."""

    async def scenario() -> tuple[int, int]:
        config = load_instruments(CAPTURES / "instruments.yaml").exchanges["coinbase"]  # type: ignore[index]
        sink = RecordingSink()
        async with FakeExchange("coinbase", load_capture(CAPTURES / "coinbase.jsonl"), speed=20.0, loop=True,
                                subscribe_deadline_s=0.3) as fake:  # fmt: skip
            handler = FeedHandler("coinbase", config, Publisher(sink, "coinbase"), WebSocketTransport(),
                                  options=HandlerOptions(ws_url=fake.url, runner=FAST))  # fmt: skip
            task = asyncio.create_task(handler.run(handle_signals=False))
            await _until(lambda: len(_published(sink, "coinbase")) > 50, what="trades on the first connection")
            handler.stop()
            await asyncio.wait_for(task, 15)
            return fake.connections, len(_published(sink, "coinbase"))

    connections, published = asyncio.run(scenario())
    assert (connections, published > 50) == (1, True)
