"""Feed handler metrics. Names and labels are a contract with dashboards and alert rules (DESIGN.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BACKFILLED",
    "BACKPRESSURE",
    "BUFFERED",
    "CONNECTED",
    "DEAD_LETTERS",
    "DUPLICATES",
    "FRAMES",
    "GAPS",
    "LAST_TRADE",
    "MISSING",
    "PARSE_ERRORS",
    "PRODUCE_LATENCY",
    "PUBLISH_ERRORS",
    "RECONNECTS",
    "SUBSCRIBED",
    "TRADES",
]

CONNECTED = Gauge("k2_feed_connected", "Open WebSocket connections to the exchange", ["exchange"])
SUBSCRIBED = Gauge("k2_feed_subscribed_symbols", "Symbols subscribed on open connections", ["exchange"])
RECONNECTS = Counter("k2_feed_reconnects_total", "Connections re-established, by cause", ["exchange", "reason"])
FRAMES = Counter("k2_feed_frames_total", "WebSocket frames received, by what they were", ["exchange", "kind"])
TRADES = Counter("k2_feed_trades_total", "Trades published to the normalized topic", ["exchange", "symbol"])
PARSE_ERRORS = Counter("k2_feed_parse_errors_total", "Frames that failed to parse (dead-lettered)", ["exchange"])
DEAD_LETTERS = Counter("k2_feed_dead_letters_total", "Frames published to the dead-letter topic", ["exchange"])
DUPLICATES = Counter(
    "k2_feed_duplicate_trades_total", "Trades dropped as already published (snapshots, overlap)", ["exchange", "symbol"]
)
GAPS = Counter("k2_feed_trade_gaps_total", "Jumps in a symbol's trade ids", ["exchange", "symbol"])
MISSING = Counter(
    "k2_feed_missing_trades_total", "Trades inside id gaps that could not be backfilled", ["exchange", "symbol"]
)
BACKFILLED = Counter("k2_feed_backfilled_trades_total", "Gap trades recovered over REST", ["exchange", "symbol"])
LAST_TRADE = Gauge(
    "k2_feed_last_trade_timestamp_seconds", "Event time of the last trade published", ["exchange", "symbol"]
)
PRODUCE_LATENCY = Histogram(
    "k2_feed_produce_latency_seconds",
    "Frame received to produce acknowledged by the broker",
    ["exchange"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BUFFERED = Gauge("k2_feed_publish_buffer_messages", "Messages waiting for the broker", ["exchange"])
BACKPRESSURE = Gauge(
    "k2_feed_publish_backpressure", "1 while the publish buffer is full and reading is paused", ["exchange"]
)
PUBLISH_ERRORS = Counter("k2_feed_publish_errors_total", "Failed produce attempts (retried)", ["exchange"])
