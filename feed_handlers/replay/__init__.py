"""Fake exchanges serving recorded captures: ``k2 replay``, ``k2 up --replay`` and the tests.

``FakeExchange`` speaks one venue's WebSocket protocol (Binance combined stream, Kraken v2, Coinbase
Advanced Trade) from a capture, with fault injection for tests; ``FakeRest`` serves the same trades over the
venue's REST backfill endpoints; ``run_replay`` serves a folder of ``<exchange>.jsonl`` captures.
"""

from __future__ import annotations

from feed_handlers.replay._core import ReplayTrade
from feed_handlers.replay.rest import FakeRest
from feed_handlers.replay.run import Endpoints, capture_urls, find_captures, load_capture, run_replay, ws_url
from feed_handlers.replay.server import PATHS, FakeExchange

__all__ = [
    "PATHS",
    "Endpoints",
    "FakeExchange",
    "FakeRest",
    "ReplayTrade",
    "capture_urls",
    "find_captures",
    "load_capture",
    "run_replay",
    "ws_url",
]
