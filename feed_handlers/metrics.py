"""Feed handler metrics. Names and labels are a contract with dashboards and alert rules (DESIGN.md)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

__all__ = [
    "BACKFILLED",
    "BACKPRESSURE",
    "BUFFERED",
    "CONNECTED",
    "DEAD_LETTERS",
    "FRAME_GAPS",
    "GAPS",
    "MISSING",
    "MISSING_FRAMES",
    "PARSE_ERRORS",
    "PUBLISH_ERRORS",
    "RECONNECTS",
    "SUBSCRIBED",
    "HotStats",
]

CONNECTED = Gauge("k2_feed_connected", "Open WebSocket connections to the exchange", ["exchange"])
SUBSCRIBED = Gauge("k2_feed_subscribed_symbols", "Symbols subscribed on open connections", ["exchange"])
RECONNECTS = Counter("k2_feed_reconnects_total", "Connections re-established, by cause", ["exchange", "reason"])
PARSE_ERRORS = Counter("k2_feed_parse_errors_total", "Frames that failed to parse (dead-lettered)", ["exchange"])
DEAD_LETTERS = Counter("k2_feed_dead_letters_total", "Frames published to the dead-letter topic", ["exchange"])
GAPS = Counter("k2_feed_trade_gaps_total", "Jumps in a symbol's trade ids", ["exchange", "symbol"])
MISSING = Counter(
    "k2_feed_missing_trades_total", "Trades inside id gaps that could not be backfilled", ["exchange", "symbol"]
)
FRAME_GAPS = Counter(
    "k2_feed_frame_gaps_total", "Jumps in a connection's frame sequence numbers (Coinbase sequence_num)", ["exchange"]
)
MISSING_FRAMES = Counter("k2_feed_missing_frames_total", "Frames skipped by those jumps", ["exchange"])
BACKFILLED = Counter("k2_feed_backfilled_trades_total", "Gap trades recovered over REST", ["exchange", "symbol"])
BUFFERED = Gauge("k2_feed_publish_buffer_messages", "Messages waiting for the broker", ["exchange"])
BACKPRESSURE = Gauge(
    "k2_feed_publish_backpressure", "1 while the publish buffer is full and reading is paused", ["exchange"]
)
PUBLISH_ERRORS = Counter("k2_feed_publish_errors_total", "Failed produce attempts (retried)", ["exchange"])


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The same bounds in integer nanoseconds: a bucket is found without a float division per message.
_LATENCY_BUCKETS_NS = tuple(round(bound * 1e9) for bound in LATENCY_BUCKETS_S)


class Timed(Protocol):
    """A published message that knows when its frame was received (0: not measured)."""

    @property
    def received_ns(self) -> int: ...


@dataclass
class HotStats:
    """Per-frame and per-trade counters kept as plain numbers and exported at scrape time.

    prometheus_client's ``labels().inc()`` takes a lock and costs more than parsing a frame; the hot
    path only touches dicts here, and :class:`_HotCollector` turns them into the same metric families
    (``k2_feed_frames_total``, ``k2_feed_trades_total``, ``k2_feed_duplicate_trades_total``,
    ``k2_feed_last_trade_timestamp_seconds``, ``k2_feed_produce_latency_seconds``).
    """

    exchange: str
    frames: dict[str, int] = field(default_factory=dict)
    trades: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    last_trade_ns: dict[str, int] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_ns: int = 0

    def __post_init__(self) -> None:
        _COLLECTOR.stats.append(self)

    def observe_acked(self, now_ns: int, messages: Iterable[Timed]) -> None:
        """Frame-received → produce-acked latency of every timed message the broker acknowledged at ``now_ns``."""
        counts, bounds, total = self.latency_counts, _LATENCY_BUCKETS_NS, 0
        for message in messages:
            received_ns = message.received_ns
            if received_ns:
                waited = now_ns - received_ns
                counts[bisect.bisect_left(bounds, waited)] += 1
                total += waited
        self.latency_sum_ns += total

    def close(self) -> None:
        """Stop exporting (a handler object that is gone)."""
        if self in _COLLECTOR.stats:
            _COLLECTOR.stats.remove(self)


class _HotCollector:
    def __init__(self) -> None:
        self.stats: list[HotStats] = []

    def collect(self) -> Iterator[Metric]:
        frames = CounterMetricFamily("k2_feed_frames", "WebSocket frames received, by what they were",
                                     labels=["exchange", "kind"])  # fmt: skip
        trades = CounterMetricFamily("k2_feed_trades", "Trades published to the normalized topic",
                                     labels=["exchange", "symbol"])  # fmt: skip
        duplicates = CounterMetricFamily("k2_feed_duplicate_trades",
                                         "Trades dropped as already published (snapshots, overlap, restarts)",
                                         labels=["exchange", "symbol"])  # fmt: skip
        last = GaugeMetricFamily("k2_feed_last_trade_timestamp_seconds", "Event time of the last trade published",
                                 labels=["exchange", "symbol"])  # fmt: skip
        latency = HistogramMetricFamily(
            "k2_feed_produce_latency_seconds",
            "Frame received to produce acknowledged by the broker",
            labels=["exchange"],
        )
        for s in self.stats:
            for kind, n in s.frames.items():
                frames.add_metric([s.exchange, kind], n)
            for symbol, n in s.trades.items():
                trades.add_metric([s.exchange, symbol], n)
            for symbol, n in s.duplicates.items():
                duplicates.add_metric([s.exchange, symbol], n)
            for symbol, ts_ns in s.last_trade_ns.items():
                last.add_metric([s.exchange, symbol], ts_ns / 1e9)
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), s.latency_counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([s.exchange], buckets, s.latency_sum_ns / 1e9)
        yield from (frames, trades, duplicates, last, latency)


_COLLECTOR = _HotCollector()
REGISTRY.register(_COLLECTOR)
