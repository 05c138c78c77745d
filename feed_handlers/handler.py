"""One exchange's feed handler: runner → parse → dedup/gaps → publish, with metrics and health.

Per frame: the verbatim frame goes to ``market.crypto.trades.<x>.raw`` (with its receive time), the
pure venue parser turns it into trades, :class:`~feed_handlers.state.TradeState` drops duplicates
(snapshots, rotation overlap, restarts) and tracks gaps, and each new trade goes to
``market.crypto.trades.<x>`` keyed by symbol. A frame that does not parse goes to
``market.crypto.trades.<x>.dlq`` with its raw bytes and the reason; the connection stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from feed_handlers.backfill import backfill
from feed_handlers.errors import ParseError
from feed_handlers.exchanges import VENUES, Venue
from feed_handlers.instruments import ExchangeConfig, load_instruments, topic_names
from feed_handlers.metrics import BACKFILLED, DEAD_LETTERS, FRAME_GAPS, GAPS, MISSING, MISSING_FRAMES, PARSE_ERRORS
from feed_handlers.publisher import NO_HEADERS, Message, Publisher, new_message
from feed_handlers.records import TradeRecord
from feed_handlers.runner import Runner, RunnerSettings
from feed_handlers.state import ConfirmedGap, LastTrade, TradeState
from feed_handlers.transport import Transport
from k2.errors import ConfigError
from k2.logs import bind

__all__ = ["FeedHandler", "HandlerOptions"]

log = logging.getLogger(__name__)

#: From stop (SIGTERM) to return: unsubscribing and closing, flushing what is buffered, closing the producer.
#: Under the 10 s a supervisor gives before SIGKILL.
STOP_BUDGET_S = 8.0
_UNSUBSCRIBE_BUDGET_S = 2.5
_CLOSE_BUDGET_S = 1.0

#: Connections whose last frame sequence number is kept: more than can be open at once (rotation overlaps).
_SEQUENCES_KEPT = 64


@dataclass(frozen=True)
class HandlerOptions:
    ws_url: str | None = None  # overrides instruments.yaml (replay, tests)
    backfill: bool = False  # fetch confirmed gaps over REST
    rest_url: str | None = None  # overrides instruments.yaml's rest_url
    venue: Venue | None = None  # overrides the venue's data (tests shorten its timeouts)
    gap_grace_s: float = 5.0
    reload_interval_s: float = 2.0
    max_buffered: int = 100_000
    runner: RunnerSettings = field(default_factory=RunnerSettings)


def canonical_map(config: ExchangeConfig) -> dict[str, str]:
    """Venue symbol -> canonical symbol of every configured instrument."""
    return {i.symbol: i.canonical for i in config.symbols}


def subscribed(config: ExchangeConfig) -> dict[str, str]:
    """What the handler subscribes to: the configured instruments, none while the exchange is disabled."""
    return canonical_map(config) if config.enabled else {}


class FeedHandler:
    """Runs one exchange until SIGTERM/``stop()``; ``start()``-free: ``await run()`` owns every task."""

    def __init__(
        self,
        exchange: str,
        config: ExchangeConfig,
        publisher: Publisher,
        transport: Transport,
        *,
        options: HandlerOptions | None = None,
        instruments_path: Path | None = None,
        last_trades: Mapping[str, LastTrade] | None = None,
    ) -> None:
        self.exchange = exchange
        self.options = options or HandlerOptions()
        self.venue: Venue = self.options.venue or VENUES[exchange]
        self.config = config
        self.canonical = subscribed(config)
        self.state = TradeState(self.options.gap_grace_s, last_trades)
        self.topic, self.raw_topic, self.dlq_topic = topic_names(exchange)
        self._publisher = publisher
        self._key = exchange.encode()  # key of the raw and dead-letter topics
        self._instruments_path = instruments_path
        self._stop = asyncio.Event()
        self._sequence: dict[int, int] = {}
        self.stats = publisher.stats
        self.runner = Runner(
            self.venue,
            self.options.ws_url or config.ws_url,
            list(self.canonical),
            channel=config.channel,
            on_frame=self.on_frame,
            transport=transport,
            settings=self.options.runner,
        )
        self._log = bind(log, exchange=exchange)

    # -- the hot path ------------------------------------------------------------------------------

    async def on_frame(self, frame: bytes | str, ts_received_ns: int, connection_id: int) -> bool:
        raw = frame.encode() if isinstance(frame, str) else frame
        received = str(ts_received_ns).encode()
        try:
            result = self.venue.parse(frame, ts_received_ns=ts_received_ns, canonical=self.canonical)
        except ParseError as exc:
            PARSE_ERRORS.labels(self.exchange).inc()
            DEAD_LETTERS.labels(self.exchange).inc()
            self._log.warning(
                "frame dead-lettered: %s", exc.reason, extra={"frame_prefix": raw[:200].decode(errors="replace")}
            )
            headers = (("reason", exc.reason.encode()), ("ts_received_ns", received))
            await self._publisher.publish_many((
                Message(self.raw_topic, self._key, raw, (("ts_received_ns", received),)),
                Message(self.dlq_topic, self._key, raw, headers),
            ))  # fmt: skip
            return False
        # The frame's messages go to the buffer together, the verbatim frame first.
        messages = [new_message((self.raw_topic, self._key, raw, [("ts_received_ns", received)], 0))]
        frames = self.stats.frames
        frames[result.kind] = frames.get(result.kind, 0) + 1
        if result.sequence_num is not None:
            self._check_sequence(result.sequence_num, connection_id)
        if result.kind == "error":
            self._log.error("venue error: %s", result.error, extra={"req_id": result.req_id})
        if result.trades:
            self._accept(result.trades, messages)
        if not self._publisher.offer(messages):  # full: wait for room (backpressure)
            await self._publisher.publish_many(messages)
        return result.kind == "shutdown"

    def _accept(self, trades: tuple[TradeRecord, ...], out: list[Message]) -> None:
        """Append a message for each trade not published before; count trades and duplicates."""
        accept, topic, stats, now = self.state.accept, self.topic, self.stats, time.monotonic()
        for trade in trades:
            symbol = trade.symbol
            verdict = accept(symbol, int(trade.trade_id), now, trade.ts_event_ns)
            if not verdict.accepted:
                stats.duplicates[symbol] = stats.duplicates.get(symbol, 0) + 1
                continue
            if verdict.opened_gap:
                self._log.info("trade id jump: %d ids not seen yet", verdict.opened_gap,
                               extra={"symbol": symbol, "trade_id": trade.trade_id})  # fmt: skip
            out.append(new_message((topic, symbol.encode(), trade.to_json(), NO_HEADERS, trade.ts_received_ns)))
            stats.trades[symbol] = stats.trades.get(symbol, 0) + 1
            stats.last_trade_ns[symbol] = trade.ts_event_ns

    def _check_sequence(self, sequence_num: int, connection_id: int) -> None:
        """Count jumps in a connection's frame sequence (Coinbase: contiguous per connection).

        Its own metrics, not the trade-gap ones: a lost frame's trades show up as trade-id gaps of their
        symbols (and are backfilled there); counting them here too would report them twice.
        """
        previous = self._sequence.get(connection_id)
        if previous is None and len(self._sequence) >= _SEQUENCES_KEPT:  # connection ids only grow
            for old in sorted(self._sequence)[: len(self._sequence) - _SEQUENCES_KEPT + 1]:
                del self._sequence[old]
        if previous is not None and sequence_num != previous + 1:
            FRAME_GAPS.labels(self.exchange).inc()
            MISSING_FRAMES.labels(self.exchange).inc(max(0, sequence_num - previous - 1))
            self._log.warning("frame sequence jumped from %d to %d", previous, sequence_num,
                              extra={"connection": connection_id})  # fmt: skip
        self._sequence[connection_id] = sequence_num

    # -- background work ---------------------------------------------------------------------------

    async def _confirm_gaps(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for gap in list(self.state.confirmed_gaps(time.monotonic())):
                GAPS.labels(self.exchange, gap.symbol).inc()
                recovered = await self._backfill(gap)
                MISSING.labels(self.exchange, gap.symbol).inc(gap.size - recovered)
                self._log.warning("gap confirmed: trades %d..%d missing (%d), %d backfilled", gap.first_id,
                                  gap.last_id, gap.size, recovered, extra={"symbol": gap.symbol})  # fmt: skip

    async def _backfill(self, gap: ConfirmedGap) -> int:
        rest_url = self.options.rest_url or self.config.rest_url
        canonical = self.canonical.get(gap.symbol)
        if not self.options.backfill or rest_url is None or canonical is None:
            return 0
        try:
            trades = await backfill(self.exchange, rest_url, self.config.channel, canonical, gap, time.time_ns())
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
            self._log.error("backfill failed: %r", exc, extra={"symbol": gap.symbol})
            return 0
        published = 0
        for trade in trades:
            if self.state.accept(trade.symbol, int(trade.trade_id), time.monotonic()).accepted:
                await self._publisher.publish(Message(self.topic, trade.symbol.encode(), trade.to_json()))
                published += 1
        BACKFILLED.labels(self.exchange, gap.symbol).inc(published)
        return published

    async def _watch_config(self) -> None:
        path = self._instruments_path
        if path is None:
            return
        seen = path.stat().st_mtime_ns
        while True:
            await asyncio.sleep(self.options.reload_interval_s)
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if mtime == seen:
                continue
            seen = mtime
            try:
                config = load_instruments(path).exchanges.get(self.exchange)  # type: ignore[call-overload]
            except ConfigError as exc:
                self._log.error("instruments.yaml not applied, keeping the running subscriptions: %s", exc)
                continue
            if config is None:
                self._log.error("instruments.yaml no longer lists %s; keeping the running subscriptions", self.exchange)
                continue
            await self.apply(config)

    async def apply(self, config: ExchangeConfig) -> None:
        """Apply a new config for this exchange: subscribe/unsubscribe the difference."""
        if config.channel != self.config.channel or config.ws_url != self.config.ws_url:
            self._log.warning("channel or ws_url changed: applied when the handler is recreated")
        self.canonical = subscribed(config)
        self.config = config
        added, removed = await self.runner.update_symbols(list(self.canonical))
        note = "" if config.enabled else " (exchange disabled: subscribed to nothing)"
        self._log.info("instruments reloaded%s", note, extra={"added": added, "removed": removed})

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        await self._publisher.start()
        deadline = 0.0
        try:
            async with asyncio.TaskGroup() as tg:
                runner = tg.create_task(self.runner.run(), name=f"{self.exchange}-runner")
                background = [
                    tg.create_task(self._confirm_gaps(), name="gaps"),
                    tg.create_task(self._watch_config(), name="config-reload"),
                ]
                stopper = tg.create_task(self._stop.wait(), name="stop")
                await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
                deadline = time.monotonic() + STOP_BUDGET_S
                self._log.info("stopping: unsubscribing and flushing")
                await self.runner.stop()
                _, late = await asyncio.wait({runner}, timeout=_UNSUBSCRIBE_BUDGET_S)
                if late:
                    self._log.warning("connections not closed in %.0fs: dropping them", _UNSUBSCRIBE_BUDGET_S)
                    runner.cancel()
                for task in (*background, stopper):
                    task.cancel()
        finally:
            left = deadline - time.monotonic() if deadline else STOP_BUDGET_S
            delivered = await self._publisher.stop(flush_timeout_s=max(0.5, left - _CLOSE_BUDGET_S),
                                                   close_timeout_s=_CLOSE_BUDGET_S)  # fmt: skip
            self._log.info("stopped", extra={"all_delivered": delivered})

    @property
    def healthy(self) -> bool:
        with contextlib.suppress(Exception):
            self._publisher.check()
            return True
        return False
