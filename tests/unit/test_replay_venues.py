"""The fake venues' pure parts: capture loading and its refusals, the timeline, time and number text."""

from __future__ import annotations

from pathlib import Path

import pytest

from feed_handlers.replay import FakeExchange, capture_urls, find_captures, load_capture
from feed_handlers.replay._core import Frame, format_rfc3339, plain_decimal
from feed_handlers.replay._timeline import Timeline
from feed_handlers.replay.binance import BinanceReplay
from feed_handlers.replay.coinbase import CoinbaseReplay
from feed_handlers.replay.kraken import KrakenReplay
from k2.errors import ConfigError
from tests.support import REPO

NS = 1_000_000_000


def test_load_capture_keeps_lines_verbatim_and_skips_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "kraken.jsonl"
    path.write_bytes(b'{"channel":"heartbeat"}\n\n  \n{"a":5.1e-05}\n')
    assert load_capture(path) == [b'{"channel":"heartbeat"}', b'{"a":5.1e-05}']
    with pytest.raises(ConfigError, match="cannot read capture"):
        load_capture(tmp_path / "missing.jsonl")


def test_captures_are_found_by_exchange_name_only(tmp_path: Path) -> None:
    for name in ("kraken.jsonl", "kraken.sent.jsonl", "bitmex.jsonl", "coinbase.jsonl"):
        (tmp_path / name).write_text("")
    assert find_captures(tmp_path) == {"kraken": tmp_path / "kraken.jsonl", "coinbase": tmp_path / "coinbase.jsonl"}
    assert capture_urls(tmp_path, host="10.0.0.1", ports={"kraken": 1, "coinbase": 2}) == {
        "kraken": "ws://10.0.0.1:1/v2",
        "coinbase": "ws://10.0.0.1:2",
    }


@pytest.mark.parametrize(
    ("venue", "line", "message"),
    [
        (BinanceReplay, b"not json", "binance capture line 2: not JSON"),
        (BinanceReplay, b'{"stream":"x@aggTrade","data":{"e":"aggTrade","s":"X"}}', "binance capture line 2"),
        (
            KrakenReplay,
            b'{"channel":"trade","type":"update","data":[{"symbol":"X","price":"1"}]}',
            "kraken capture line 2",
        ),
        (CoinbaseReplay, b'{"channel":"market_trades","timestamp":"yesterday","events":[]}', "coinbase capture line 2"),
    ],
)
def test_a_capture_line_the_venue_would_never_send_is_refused_with_its_number(
    venue: type[BinanceReplay | KrakenReplay | CoinbaseReplay], line: bytes, message: str
) -> None:
    good = {
        BinanceReplay: b'{"result":null,"id":1}',
        KrakenReplay: b'{"channel":"heartbeat"}',
        CoinbaseReplay: b'{"channel":"subscriptions","events":[]}',
    }[venue]
    with pytest.raises(ConfigError, match=message):
        venue().load([good, line])


def test_unknown_exchange_and_bad_speed_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no fake exchange 'bitmex'"):
        FakeExchange("bitmex", [])
    with pytest.raises(ConfigError, match="speed"):
        FakeExchange("kraken", [], speed=0.0)


def test_generated_frames_are_left_out_of_the_feed() -> None:
    capture = CoinbaseReplay().load(load_capture(REPO / "captures/coinbase.jsonl"))
    assert len(capture.seed) == 2  # the recorded BTC-USD and ETH-USD snapshots
    kinds = [type(f.payload).__name__ for f in capture.frames]
    assert kinds.count("_Trades") == 27 and kinds.count("_Other") == 3  # ticker frames; no acks, no heartbeats


def test_timeline_laps_and_spans() -> None:
    frames = [
        Frame(0, None),  # no time: goes with the first known one
        Frame(10 * NS, None, {"BTC": (5, 6), "BTC@raw": (50, 52)}),
        Frame(0, None),
        Frame(14 * NS, None, {"BTC": (7, 7), "BTC@raw": (53, 53)}),
    ]
    timeline = Timeline.of(frames, 1_000)
    assert timeline.times == (10 * NS, 10 * NS, 10 * NS, 14 * NS)
    assert timeline.lap_ns == 4 * NS + 4 * NS // 3 - (4 * NS // 3) % 1_000 + 1_000
    assert timeline.spans == {"BTC": 3, "BTC@raw": 4}
    assert timeline.offsets(2) == {"BTC": 6, "BTC@raw": 8}


def test_time_and_number_text() -> None:
    ns = 1_786_312_338_504_360_000
    assert format_rfc3339(ns, digits=6) == "2026-08-09T21:52:18.504360Z"
    assert format_rfc3339(ns, digits=6, trim=True) == "2026-08-09T21:52:18.50436Z"
    assert format_rfc3339(ns - ns % NS, digits=9, trim=True) == "2026-08-09T21:52:18Z"
    assert plain_decimal("5.1e-05") == "0.000051"
    assert plain_decimal("65083.10") == "65083.10"
