"""A feed handler in this process against a fake exchange, publishing to the stack's broker: faults are
injected on the exchange side, and what reached silver is compared with what the exchange wrote.

Vocabulary of the figures every test prints:

sent        trades the fake exchange wrote to at least one connection (``FakeExchange.served``)
stored      trades in ``silver_trades FINAL`` (the run's own canonical symbols)
lost        sent but not stored
duplicated  silver rows beyond one per key, before FINAL (``count() - uniqExact(key)``) and after it
unseen      trades the exchange released (``history``) inside the stored id range that never reached us:
            never written to us (we were away and no snapshot covered them) or written to a connection
            that was cut before they arrived; the handler must count each as missing, not hide it
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY

from feed_handlers.exchanges import VENUES
from feed_handlers.handler import FeedHandler, HandlerOptions
from feed_handlers.instruments import ExchangeConfig, Instrument, load_instruments
from feed_handlers.publisher import KafkaSink, Publisher
from feed_handlers.replay import FakeExchange, load_capture
from feed_handlers.runner import RunnerSettings
from feed_handlers.transport import WebSocketTransport
from tests.support import REPO, Stack, read_topic, topic, wait_for

CAPTURES = REPO / "captures"
#: Reconnect quickly (the production backoff starts at 0.5 s and caps at 30 s: same code, other numbers).
FAST = RunnerSettings(reconnect_backoff_initial_s=0.05, reconnect_backoff_max_s=0.2, healthy_after_s=0.5)
#: Per-venue replay speed: a few dozen trades a second from each capture.
SPEED = {"binance": 20.0, "kraken": 60.0, "coinbase": 15.0}

Key = tuple[str, int]  # (venue symbol, trade id)
MISSING = "k2_feed_missing_trades_total"
GAPS = "k2_feed_trade_gaps_total"


def metric(name: str, exchange: str, symbols: list[str]) -> float:
    return sum(REGISTRY.get_sample_value(name, {"exchange": exchange, "symbol": s}) or 0.0 for s in symbols)


def renamed(config: ExchangeConfig, prefix: str) -> ExchangeConfig:
    """The capture's instruments with canonical symbols of the test's own (``BTC-USD`` -> ``<prefix>BTC-USD``):
    its silver rows are told apart from every other test's on the shared stack."""
    symbols = tuple(Instrument(symbol=i.symbol, canonical=prefix + i.canonical) for i in config.symbols)
    return config.model_copy(update={"symbols": symbols})


async def until(predicate: Callable[[], object], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {limit_s}s waiting for {what}"
        await asyncio.sleep(0.01)


@dataclass
class FeedRun:
    """One handler run against one fake exchange, and the faults' timings."""

    exchange: str
    prefix: str
    fake: FakeExchange
    handler: FeedHandler
    recover_s: list[float] = field(default_factory=list)
    counted_before: tuple[float, float] = (0.0, 0.0)  # missing trades and gaps counted before the run
    undelivered: int = 0  # messages the handler still held when it stopped

    @property
    def symbols(self) -> list[str]:
        return list(self.handler.canonical)

    def published_count(self) -> int:
        return sum(self.handler.stats.trades.values())

    async def trades_flow(self, count: int, limit_s: float = 20.0) -> None:
        """Wait until ``count`` more trades were published."""
        target = self.published_count() + count
        await until(lambda: self.published_count() >= target, limit_s, f"{count} more {self.exchange} trades")

    async def caught_up(self, since: int, limit_s: float = 20.0) -> None:
        """Wait until every trade written after ``fake.served[since]`` was taken in by the handler."""

        def done() -> bool:
            last: dict[str, int] = {}
            for symbol, trade_id in self.fake.served[since:]:
                last[symbol] = max(trade_id, last.get(symbol, trade_id))
            return all((self.handler.state.last_id(s) or -1) >= i for s, i in last.items())

        await until(done, limit_s, f"{self.exchange} handler caught up with what was written")

    async def finish(self, limit_s: float = 20.0) -> None:
        """After the faults: hold the feed, wait until the handler took in everything the connection that
        stayed up carried and every gap was confirmed (counted); leaving :func:`feed` then stops the handler,
        which flushes to the broker."""
        since = len(self.fake.served)  # the faults are over: from here on one connection carries everything
        await self.trades_flow(3, limit_s)
        self.fake.pause_feed()
        await self.fake.wait_until(lambda: self.fake.idle)
        await self.caught_up(since, limit_s)
        await until(lambda: self.handler.state.unconfirmed_gaps() == 0, 10, "every gap confirmed and counted")


@asynccontextmanager
async def feed(
    stack: Stack,
    exchange: str,
    prefix: str,
    *,
    venue_changes: dict[str, Any] | None = None,
    transport: WebSocketTransport | None = None,
    runner: RunnerSettings = FAST,
    max_buffered: int = 100_000,
) -> AsyncIterator[FeedRun]:
    """Replay ``exchange``'s capture in a loop to a handler publishing to ``stack``, with the capture's symbols
    renamed ``<prefix><canonical>``; yields once trades flow. Call :meth:`FeedRun.finish` before leaving."""
    config = renamed(load_instruments(CAPTURES / "instruments.yaml").exchanges[exchange], prefix)  # type: ignore[index]
    # Subscriptions go out at 100 messages/s instead of the venue's 2-5, or 100 reconnects would take minutes.
    venue = dataclasses.replace(VENUES[exchange], max_messages_per_s=100.0, **(venue_changes or {}))
    publisher = Publisher(KafkaSink(stack.kafka, idempotence=False), exchange, max_buffered=max_buffered)
    async with FakeExchange(exchange, load_capture(CAPTURES / f"{exchange}.jsonl"), speed=SPEED[exchange], loop=True,
                            heartbeat_interval_s=0.1) as fake:  # fmt: skip
        handler = FeedHandler(exchange, config, publisher, transport or WebSocketTransport(),
                              options=HandlerOptions(ws_url=fake.url, gap_grace_s=0.3, runner=runner, venue=venue))  # fmt: skip
        run = FeedRun(exchange, prefix, fake, handler)
        run.counted_before = (metric(MISSING, exchange, run.symbols), metric(GAPS, exchange, run.symbols))
        task = asyncio.create_task(handler.run(handle_signals=False))
        try:
            await run.trades_flow(5)
            yield run
        finally:
            handler.stop()
            await asyncio.wait_for(task, 30)
            run.undelivered = publisher.buffered


async def run_feed(
    stack: Stack, exchange: str, prefix: str, faults: Callable[[FeedRun], Awaitable[None]], **options: Any
) -> FeedRun:
    """:func:`feed` with ``faults`` run on it, then :meth:`FeedRun.finish`."""
    async with feed(stack, exchange, prefix, **options) as run:
        await faults(run)
        await run.finish()
    return run


@dataclass(frozen=True)
class Figures:
    sent: int
    stored: int
    lost: int
    lost_keys: frozenset[Key]
    #: trades inside the handler's first..last stored id of their symbol that it never got (it can count these)
    unseen_keys: frozenset[Key]
    #: trades lost before the handler's first or after its last trade of their symbol: no id on that side to
    #: see a gap from (a later trade of the symbol would reveal the ones after)
    outside_span_keys: frozenset[Key]
    duplicated: int  # before FINAL
    duplicated_final: int
    published_twice: int  # on the topic (at-least-once delivery may repeat; silver must not)
    unseen: int
    missing_counted: float
    gaps_counted: float

    def line(self) -> str:
        return (f"sent={self.sent} stored={self.stored} lost={self.lost} duplicated={self.duplicated}"
                f"/{self.duplicated_final} (before/after FINAL) unseen={self.unseen} "
                f"missing_counted={self.missing_counted:.0f} gaps_counted={self.gaps_counted:.0f} "
                f"lost_outside_first_last={len(self.outside_span_keys)}")  # fmt: skip


def settle(stack: Stack, run: FeedRun) -> Figures:
    """Wait until silver holds what the handler published, and measure."""
    exchange, prefix = run.exchange, run.prefix
    venue_of = {c: s for s, c in run.handler.canonical.items()}
    published = [
        (r["symbol"], int(r["trade_id"]))
        for r in read_topic(stack.kafka, topic(exchange), containing=f'"canonical_symbol":"{prefix}'.encode())
        if str(r["canonical_symbol"]).startswith(prefix)
    ]
    client = stack.client()
    where = "exchange = {x:String} AND startsWith(canonical_symbol, {p:String})"
    params = {"x": exchange, "p": prefix}
    wait_for(
        lambda: client.command(f"SELECT count() FROM k2.silver_trades FINAL WHERE {where}", parameters=params)
        >= len(set(published)),
        60, f"{len(set(published))} {exchange} trades in silver",
    )  # fmt: skip
    rows = client.query(
        f"SELECT canonical_symbol, trade_id FROM k2.silver_trades FINAL WHERE {where}", parameters=params
    ).result_rows
    stored = {(venue_of[c], int(i)) for c, i in rows}
    raw_count, raw_unique = client.query(
        f"SELECT count(), uniqExact(canonical_symbol, trade_id) FROM k2.silver_trades WHERE {where}", parameters=params
    ).result_rows[0]
    sent = set(run.fake.served)
    lost = sent - stored
    truncated = [s for s, h in run.fake.history.items() if h.maxlen is not None and len(h) >= h.maxlen]
    assert not truncated, f"the fake's history of {truncated} is capped: the unseen count would be short"
    span: dict[str, tuple[int, int]] = {}  # symbol -> the handler's first and last stored trade id
    for symbol, trade_id in stored:
        low, high = span.get(symbol, (trade_id, trade_id))
        span[symbol] = (min(low, trade_id), max(high, trade_id))
    unseen = {
        (symbol, t.trade_id)
        for symbol in run.symbols if symbol in span
        for t in run.fake.history.get(symbol, ()) if span[symbol][0] <= t.trade_id <= span[symbol][1]
    } - stored  # fmt: skip
    outside = {(s, i) for s, i in lost if s not in span or not span[s][0] <= i <= span[s][1]}
    missing_before, gaps_before = run.counted_before
    figures = Figures(
        sent=len(sent),
        stored=len(stored),
        lost=len(lost),
        lost_keys=frozenset(lost),
        unseen_keys=frozenset(unseen),
        outside_span_keys=frozenset(outside),
        duplicated=int(raw_count) - int(raw_unique),
        duplicated_final=len(rows) - len(stored),
        published_twice=len(published) - len(set(published)),
        unseen=len(unseen),
        missing_counted=metric(MISSING, exchange, run.symbols) - missing_before,
        gaps_counted=metric(GAPS, exchange, run.symbols) - gaps_before,
    )
    assert run.undelivered == 0, f"the handler stopped with {run.undelivered} messages not delivered"
    assert stored == set(published), "silver differs from what the handler published"
    assert stored <= sent, "a trade in silver the exchange never sent"
    return figures


def mean_max(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"mean={statistics.fmean(values):.3f}s max={max(values):.3f}s"
