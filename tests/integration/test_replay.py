"""The fake exchanges against a real ``websockets`` client: handshakes, acks, heartbeats, snapshots, re-timing,
loop renumbering, every injected fault as the client sees it, and the REST backfill answers.

The feed runs as fast as possible (speed=None) and is held with ``pause_feed`` where a test needs a fixed
point; tests wait on the server's state (``wait_until``), never on sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from feed_handlers.records import rfc3339_to_ns
from feed_handlers.replay import (
    Endpoints,
    FakeExchange,
    FakeRest,
    capture_urls,
    load_capture,
    run_replay,
)
from k2.errors import ConfigError
from tests.support import REPO

CAPTURES = REPO / "captures"
RFC3339_US = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
KRAKEN_TS = re.compile(r'"timestamp":"([^"]+)"')


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 30))


def lines(exchange: str) -> list[bytes]:
    return load_capture(CAPTURES / f"{exchange}.jsonl")


@asynccontextmanager
async def client(url: str) -> AsyncIterator[ClientConnection]:
    # max_queue=None: the client keeps reading while the test looks elsewhere (the feed may flood)
    async with connect(url, max_queue=None, compression=None) as ws:
        yield ws


async def text(ws: ClientConnection) -> str:
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(frame, str)
    return frame


async def recv(ws: ClientConnection) -> Any:
    return json.loads(await text(ws), parse_float=Decimal)  # Kraken numbers stay exact


async def recv_until(ws: ClientConnection, done: Callable[[Any], bool]) -> list[Any]:
    """Frames up to and including the first one ``done`` accepts."""
    frames = [await recv(ws)]
    while not done(frames[-1]):
        frames.append(await recv(ws))
    return frames


async def http_get(url: str) -> tuple[int, Any]:
    def get() -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read(), parse_float=Decimal)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    return await asyncio.to_thread(get)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def is_heartbeat(frame: Any) -> bool:
    return bool(frame == {"channel": "heartbeat"})


def is_update(frame: Any) -> bool:
    """A Kraken trade update (the status frame is a "type":"update" too)."""
    return bool(frame.get("channel") == "trade" and frame.get("type") == "update")


# -- Binance ----------------------------------------------------------------------------------------------


def test_binance_url_and_live_subscriptions_choose_the_streams_and_times_move_to_now() -> None:
    capture = [orjson.loads(line) for line in lines("binance")]
    streams = {"zilusdt@aggTrade", "dentusdt@aggTrade", "dentusdt@bookTicker"}
    expected = [frame for frame in capture if frame["stream"] in streams]

    async def scenario() -> None:
        async with FakeExchange("binance", lines("binance"), speed=None) as ex:
            ex.pause_feed()
            async with client(ex.url + "?streams=zilusdt@aggTrade") as ws:
                assert ex.url.endswith("/stream")
                await ws.send('{"method":"SUBSCRIBE","params":["dentusdt@aggTrade","dentusdt@bookTicker"],"id":1}')
                assert await recv(ws) == {"result": None, "id": 1}
                await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":"list-2"}')
                listed = ["zilusdt@aggTrade", "dentusdt@aggTrade", "dentusdt@bookTicker"]
                assert await recv(ws) == {"result": listed, "id": "list-2"}
                resumed_ms = now_ms()
                ex.resume_feed()
                await ex.wait_until(ex.finished.is_set)
                got = [orjson.loads(await text(ws)) for _ in expected]
                # nothing else was sent: the next frame answers the next request
                await ws.send('{"method":"UNSUBSCRIBE","params":["dentusdt@aggTrade"],"id":3}')
                assert orjson.loads(await text(ws)) == {"result": None, "id": 3}

        assert [g["stream"] for g in got] == [e["stream"] for e in expected]
        trades = [(g, e) for g, e in zip(got, expected, strict=True) if e["data"].get("e") == "aggTrade"]
        shift = trades[0][0]["data"]["T"] - trades[0][1]["data"]["T"]
        assert abs(trades[0][0]["data"]["T"] - resumed_ms) < 1000, "the first trade reads 'now'"
        for g, e in zip(got, expected, strict=True):
            if "E" in e["data"]:  # every number and string as recorded; E and T moved by one shift (ms exact)
                assert g["data"] == {**e["data"], "E": e["data"]["E"] + shift, "T": e["data"]["T"] + shift}
            else:  # bookTicker: verbatim
                assert g == e
        assert ex.served == [(e["data"]["s"], e["data"]["a"]) for _, e in trades]
        assert ex.connections == 1

    run(scenario)


def test_binance_loop_renumbers_ids_contiguously_and_times_run_on() -> None:
    zil = [line for line in lines("binance") if b"zilusdt@aggTrade" in line][:8]
    recorded = [orjson.loads(line)["data"] for line in zil]

    async def scenario() -> None:
        async with (
            FakeExchange("binance", zil, speed=None, loop=True) as ex,
            client(ex.url + "?streams=zilusdt@aggTrade") as ws,
        ):
            await ex.wait_until(lambda: len(ex.served) >= 3 * len(zil))
            ex.pause_feed()
            data = [orjson.loads(await text(ws))["data"] for _ in range(3 * len(zil))]

        ids = [d["a"] for d in data]
        assert ids == list(range(recorded[0]["a"], recorded[0]["a"] + 3 * len(zil)))
        assert all(d["f"] == prev["l"] + 1 for prev, d in itertools.pairwise(data))
        times = [d["T"] for d in data]
        assert times == sorted(times) and times[len(zil)] > times[len(zil) - 1]
        lap_ms = times[len(zil)] - times[0]
        assert [t - times[0] for t in times[len(zil) : 2 * len(zil)]] == [
            lap_ms + d["T"] - recorded[0]["T"] for d in recorded
        ], "each lap keeps the recorded spacing"
        assert [(d["p"], d["q"], d["m"]) for d in data[len(zil) :]] == [(d["p"], d["q"], d["m"]) for d in recorded] * 2

    run(scenario)


def test_binance_server_shutdown_notice() -> None:
    async def scenario() -> None:
        async with FakeExchange("binance", lines("binance"), speed=None) as ex:
            ex.pause_feed()
            async with client(ex.url) as ws:
                await ws.send('{"method":"SUBSCRIBE","params":["zilusdt@aggTrade"],"id":7}')
                assert await recv(ws) == {"result": None, "id": 7}
                await ex.send_server_shutdown()
                notice = orjson.loads(await text(ws))
        assert notice == {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": notice["data"]["E"]}}
        assert abs(notice["data"]["E"] - now_ms()) < 1000
        async with FakeExchange("kraken", lines("kraken")) as kraken:
            with pytest.raises(ConfigError):
                await kraken.send_server_shutdown()

    run(scenario)


def test_binance_rest_backfills_what_a_cut_connection_missed() -> None:
    capture = [orjson.loads(line)["data"] for line in lines("binance") if b"dentusdt@aggTrade" in line]

    async def scenario() -> None:
        async with FakeExchange("binance", lines("binance"), speed=None) as ex, FakeRest(ex) as rest:
            received: list[Any] = []
            async with client(ex.url + "?streams=dentusdt@aggTrade") as ws:
                await ex.wait_until(lambda: len(ex.served) >= 10)
                ex.pause_feed()
                await ex.drop_connections()
                with pytest.raises(ConnectionClosedError):
                    while True:
                        received.append(orjson.loads(await ws.recv())["data"])
            ex.resume_feed()  # the rest of the capture goes by with nobody connected
            await ex.wait_until(ex.finished.is_set)
            base = f"{rest.url}/api/v3/aggTrades?symbol=DENTUSDT"
            status, rows = await http_get(f"{base}&fromId={capture[0]['a']}&limit=1000")
            assert status == 200
            # every id, price, quantity and flag as recorded; what the client got, exactly as it got it
            assert [{**r, "T": 0} for r in rows] == [{**{k: d[k] for k in "apqflTmM"}, "T": 0} for d in capture]
            assert rows[: len(received)] == [{k: d[k] for k in "apqflTmM"} for d in received]
            missed = [r for r in rows if ("DENTUSDT", r["a"]) not in set(ex.served)]
            assert missed and missed == rows[len(rows) - len(missed) :], "the cut lost the tail"
            shift = missed[0]["T"] - capture[len(rows) - len(missed)]["T"]
            assert [r["T"] - shift for r in missed] == [d["T"] for d in capture[len(rows) - len(missed) :]]
            status, page = await http_get(f"{base}&fromId={missed[0]['a']}&limit=3")
            assert page == missed[:3]
            assert (await http_get(f"{rest.url}/api/v3/aggTrades?symbol=NOPE")) == (
                400,
                {"code": -1121, "msg": "Invalid symbol."},
            )
            assert rest.requests[0] == f"/api/v3/aggTrades?symbol=DENTUSDT&fromId={capture[0]['a']}&limit=1000"

    run(scenario)


def test_binance_rest_historical_trades_from_a_trade_capture() -> None:
    capture = load_capture(REPO / "tests/fixtures/binance/trade.jsonl")

    async def scenario() -> None:
        async with FakeExchange("binance", capture, speed=None) as ex, FakeRest(ex) as rest:
            async with client(ex.url + "?streams=bnbbtc@trade") as ws:
                served = [orjson.loads(await text(ws))["data"] for _ in capture]
            status, rows = await http_get(f"{rest.url}/api/v3/historicalTrades?symbol=BNBBTC&limit=10")
        assert status == 200
        assert rows == [
            {"id": 40756030, "price": "0.00426990", "qty": "33.82000000", "quoteQty": "0.144408018",
             "time": served[0]["T"], "isBuyerMaker": False, "isBestMatch": True},
            {"id": 60276726, "price": "0.00219650", "qty": "6.48000000", "quoteQty": "0.01423332",
             "time": served[1]["T"], "isBuyerMaker": True, "isBestMatch": True},
        ]  # fmt: skip

    run(scenario)


# -- Kraken -----------------------------------------------------------------------------------------------


def test_kraken_status_acks_snapshot_heartbeat_pong_and_exact_numbers() -> None:
    recorded = [line.decode() for line in lines("kraken") if b'"BTC/USD"' in line]

    async def scenario() -> None:
        async with FakeExchange("kraken", lines("kraken"), speed=None, heartbeat_interval_s=0.05) as ex:
            ex.pause_feed()
            async with client(ex.url) as ws:
                assert ex.url.endswith("/v2")
                assert await recv(ws) == {"channel": "status", "type": "update", "data": [
                    {"api_version": "v2", "connection_id": 13834774380200032777, "system": "online",
                     "version": "2.0.0"}]}  # fmt: skip
                request = {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"],
                                                             "snapshot": True}, "req_id": 1}  # fmt: skip
                await ws.send(orjson.dumps(request).decode())
                acks = [await recv(ws), await recv(ws)]
                for ack, symbol in zip(acks, ["BTC/USD", "ETH/USD"], strict=True):
                    assert RFC3339_US.fullmatch(ack["time_in"]) and RFC3339_US.fullmatch(ack["time_out"])
                    assert ack == {"method": "subscribe", "result": {"channel": "trade", "symbol": symbol,
                                   "snapshot": True}, "success": True, "time_in": ack["time_in"],
                                   "time_out": ack["time_out"], "req_id": 1}  # fmt: skip
                # nothing was released yet: the snapshots are empty
                assert [await recv(ws), await recv(ws)] == [{"channel": "trade", "type": "snapshot", "data": []}] * 2
                assert await recv(ws) == {"channel": "heartbeat"}  # quiet: the feed is held
                await ws.send('{"method":"ping","req_id":101}')
                pong = (await recv_until(ws, lambda f: not is_heartbeat(f)))[-1]
                assert pong == {"method": "pong", "time_in": pong["time_in"], "time_out": pong["time_out"],
                                "req_id": 101}  # fmt: skip
                await ws.send('{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"]},"req_id":2}')
                error = (await recv_until(ws, lambda f: not is_heartbeat(f)))[-1]
                assert (error["error"], error["success"], error["req_id"]) == ("Already subscribed", False, 2)
                await ws.send('{"method":"unsubscribe","params":{"channel":"trade","symbol":["ETH/USD"]},"req_id":3}')
                ack = (await recv_until(ws, lambda f: not is_heartbeat(f)))[-1]
                assert (ack["method"], ack["result"], ack["success"], ack["req_id"]) == (
                    "unsubscribe", {"channel": "trade", "symbol": "ETH/USD"}, True, 3)  # fmt: skip
                resumed_ns = time.time_ns()
                ex.resume_feed()
                await ex.wait_until(ex.finished.is_set)
                got: list[str] = []
                while len(got) < len(recorded):
                    frame = await text(ws)
                    if frame != '{"channel":"heartbeat"}':
                        got.append(frame)

        # the frames are the recorded text with only the timestamp moved (numbers untouched, 5.1e-05 included)
        shift = rfc3339_to_ns(KRAKEN_TS.findall(got[0])[0]) - rfc3339_to_ns(KRAKEN_TS.findall(recorded[0])[0])
        assert abs(rfc3339_to_ns(KRAKEN_TS.findall(got[0])[0]) - resumed_ns) < 1_000_000_000
        assert shift % 1000 == 0
        for frame, line in zip(got, recorded, strict=True):
            assert frame == KRAKEN_TS.sub(lambda m: f'"timestamp":"{_us(rfc3339_to_ns(m.group(1)) + shift)}"', line)
        assert any("e-05" in frame for frame in got)
        served_ids = [t["trade_id"] for frame in got for t in json.loads(frame)["data"]]
        assert ex.served == [("BTC/USD", i) for i in served_ids]

    run(scenario)


def _us(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 10**9 // 1000:06d}Z"


def test_kraken_reconnect_snapshot_overlaps_what_was_seen_then_updates_continue() -> None:
    async def scenario() -> None:
        async with FakeExchange("kraken", lines("kraken"), speed=None) as ex:
            subscribe = (
                '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":true},"req_id":1}'
            )
            async with client(ex.url) as ws:
                await ws.send(subscribe)
                await ex.wait_until(lambda: len(ex.served) >= 60)
                ex.pause_feed()
                await ex.wait_until(lambda: ex.idle)
                last = ex.served[-1][1]
                frames = await recv_until(ws, lambda f: is_update(f) and f["data"][-1]["trade_id"] == last)
                seen = [t["trade_id"] for f in frames if is_update(f) for t in f["data"]]
            async with client(ex.url) as ws:
                await recv(ws)  # status
                await ws.send(subscribe)
                assert (await recv(ws))["success"] is True
                snapshot = await recv(ws)
                assert snapshot["type"] == "snapshot"
                ids = [t["trade_id"] for t in snapshot["data"]]
                assert ids == seen[-50:], "the reconnecting client gets the 50 trades it saw last"
                assert ids == [t.trade_id for t in ex.history["BTC/USD"]][-50:]
                ex.resume_feed()
                update = (await recv_until(ws, is_update))[-1]
                assert update["data"][0]["trade_id"] == ids[-1] + 1
            assert ex.connections == 2

    run(scenario)


def test_kraken_loop_renumbers_per_symbol_contiguously() -> None:
    few = lines("kraken")[:12]
    recorded = [t for line in few for t in json.loads(line, parse_float=Decimal)["data"]]
    per_lap = len(recorded)

    async def scenario() -> None:
        async with FakeExchange("kraken", few, speed=None, loop=True) as ex, client(ex.url) as ws:
            await ws.send('{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD","ETH/USD"],'
                          '"snapshot":false},"req_id":1}')  # fmt: skip
            await ex.wait_until(lambda: len(ex.served) >= 3 * per_lap)
            ex.pause_feed()
            trades: list[Any] = []
            while len(trades) < 3 * per_lap:
                frame = await recv(ws)
                trades += frame["data"] if frame.get("channel") == "trade" else []

        for symbol in ("BTC/USD", "ETH/USD"):
            ids = [t["trade_id"] for t in trades if t["symbol"] == symbol]
            first = next(t["trade_id"] for t in recorded if t["symbol"] == symbol)
            assert ids == list(range(first, first + len(ids)))
        times = [rfc3339_to_ns(t["timestamp"]) for t in trades]
        assert times == sorted(times) and times[per_lap] > times[per_lap - 1]
        laps = [(t["price"], t["qty"], t["side"]) for t in trades[per_lap : 3 * per_lap]]
        assert laps == [(t["price"], t["qty"], t["side"]) for t in recorded] * 2

    run(scenario)


def test_kraken_rest_trades_since_a_cursor_are_the_replayed_trades() -> None:
    async def scenario() -> None:
        async with FakeExchange("kraken", lines("kraken"), speed=None) as ex, FakeRest(ex) as rest:
            async with client(ex.url) as ws:
                await ws.send('{"method":"subscribe","params":{"channel":"trade","symbol":["ETH/USD"],'
                              '"snapshot":false},"req_id":1}')  # fmt: skip
                await ex.wait_until(ex.finished.is_set)
                frames = await recv_until(ws, lambda f: is_update(f) and f["data"][-1]["trade_id"]
                                          == ex.history["ETH/USD"][-1].trade_id)  # fmt: skip
            served = [t for f in frames if is_update(f) for t in f["data"]]
            cursor = rfc3339_to_ns(served[9]["timestamp"])
            status, answer = await http_get(f"{rest.url}/0/public/Trades?pair=ETH/USD&since={cursor}&count=40")
            assert status == 200 and answer["error"] == []
            rows = answer["result"]["ETH/USD"]
            after = [t for t in served if rfc3339_to_ns(t["timestamp"]) > cursor][:40]
            assert rows == [
                [format(t["price"], "f"), format(t["qty"], "f"), Decimal(rfc3339_to_ns(t["timestamp"])) / 10**9,
                 "b" if t["side"] == "buy" else "s", "m" if t["ord_type"] == "market" else "l", "", t["trade_id"]]
                for t in after
            ]  # fmt: skip
            assert answer["result"]["last"] == str(rfc3339_to_ns(after[-1]["timestamp"]))
            assert all("e" not in row[1] for row in rows)
            unknown = await http_get(f"{rest.url}/0/public/Trades?pair=DOGE/USD")
            assert unknown == (200, {"error": ["EQuery:Unknown asset pair"]})

    run(scenario)


# -- Coinbase ---------------------------------------------------------------------------------------------


def test_coinbase_snapshots_newest_first_then_ack_then_updates_with_contiguous_sequence() -> None:
    recorded = [orjson.loads(line) for line in lines("coinbase")]
    snapshot_btc = recorded[0]["events"][0]["trades"]
    updates = [f for f in recorded if f["channel"] == "market_trades" and f["events"][0]["type"] == "update"]

    async def scenario() -> None:
        async with FakeExchange("coinbase", lines("coinbase"), speed=None, heartbeat_interval_s=0.05) as ex:
            assert re.fullmatch(r"ws://127\.0\.0\.1:\d+", ex.url)
            ex.pause_feed()
            async with client(ex.url) as ws:
                await ws.send('{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channel":"market_trades"}')
                snap_btc, snap_eth, ack = await recv(ws), await recv(ws), await recv(ws)
                await ws.send('{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channel":"heartbeats"}')
                ack2 = await recv(ws)
                beats = [await recv(ws) for _ in range(3)]
                resumed_ns = time.time_ns()
                ex.resume_feed()
                await ex.wait_until(ex.finished.is_set)
                frames: list[Any] = []
                while len(frames) < len(updates):
                    frame = await recv(ws)
                    if frame["channel"] == "market_trades":
                        frames.append(frame)
                    else:
                        assert frame["channel"] == "heartbeats", "no frame of a channel not subscribed"
                        beats.append(frame)
                last = beats[-1]["sequence_num"], frames[-1]["sequence_num"]

        # snapshot: the recorded 100 trades, newest first, moved in time by one shift into the past
        assert snap_btc["sequence_num"] == 0 and snap_btc["events"][0]["type"] == "snapshot"
        got = snap_btc["events"][0]["trades"]
        assert [t["trade_id"] for t in got] == [t["trade_id"] for t in snapshot_btc]
        shift = rfc3339_to_ns(got[0]["time"]) - rfc3339_to_ns(snapshot_btc[0]["time"])
        assert all(
            rfc3339_to_ns(g["time"]) - rfc3339_to_ns(r["time"]) == shift for g, r in zip(got, snapshot_btc, strict=True)
        )
        assert [{**g, "time": ""} for g in got] == [{**r, "time": ""} for r in snapshot_btc]
        assert rfc3339_to_ns(got[0]["time"]) < resumed_ns
        assert snap_eth["sequence_num"] == 1 and snap_eth["events"][0]["trades"][0]["product_id"] == "ETH-USD"
        assert ack == {"channel": "subscriptions", "timestamp": ack["timestamp"], "sequence_num": 2,
                       "events": [{"subscriptions": {"market_trades": ["BTC-USD", "ETH-USD"]}}]}  # fmt: skip
        assert ack2["events"] == [{"subscriptions": {"heartbeats": ["heartbeats"],
                                                     "market_trades": ["BTC-USD", "ETH-USD"]}}]  # fmt: skip
        # heartbeats: a server-wide counter stepping by one, Go's time format
        counters = [b["events"][0]["heartbeat_counter"] for b in beats]
        assert counters == list(range(counters[0], counters[0] + len(counters)))
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC m=\+\d+\.\d{9}",
                            beats[0]["events"][0]["current_time"])  # fmt: skip
        # sequence_num: contiguous over every frame of the connection, from 0
        sequence = sorted([0, 1, 2, ack2["sequence_num"]] + [b["sequence_num"] for b in beats]
                          + [f["sequence_num"] for f in frames])  # fmt: skip
        assert sequence == list(range(max(last) + 1))
        # updates: recorded trades (newest first in a message), trade time and envelope moved by one shift
        shift = rfc3339_to_ns(frames[0]["timestamp"]) - rfc3339_to_ns(updates[0]["timestamp"])
        assert abs(rfc3339_to_ns(frames[0]["timestamp"]) - resumed_ns) < 1_000_000_000
        for frame, update in zip(frames, updates, strict=True):
            assert rfc3339_to_ns(frame["timestamp"]) == rfc3339_to_ns(update["timestamp"]) + shift
            trades, wanted = frame["events"][0]["trades"], update["events"][0]["trades"]
            assert [{**t, "time": rfc3339_to_ns(t["time"])} for t in trades] == [
                {**t, "time": rfc3339_to_ns(t["time"]) + shift} for t in wanted
            ]
        assert ex.served[:2] == [("BTC-USD", int(snapshot_btc[-1]["trade_id"])),
                                 ("BTC-USD", int(snapshot_btc[-2]["trade_id"]))]  # fmt: skip

    run(scenario)


def test_coinbase_reconnect_gets_a_snapshot_overlapping_what_was_seen_and_sequence_restarts() -> None:
    subscribe = '{"type":"subscribe","product_ids":["BTC-USD"],"channel":"market_trades"}'

    async def scenario() -> None:
        async with FakeExchange("coinbase", lines("coinbase"), speed=None, loop=True) as ex:
            async with client(ex.url) as ws:
                await ws.send(subscribe)
                frames = await recv_until(ws, lambda f: f["channel"] == "market_trades" and f["sequence_num"] >= 5)
                seen = [int(t["trade_id"]) for f in frames if f["channel"] == "market_trades"
                        for t in f["events"][0]["trades"]]  # fmt: skip
                ex.pause_feed()
                await ex.wait_until(lambda: ex.idle)
            async with client(ex.url) as ws:
                await ws.send(subscribe)
                snapshot = await recv(ws)
                assert snapshot["sequence_num"] == 0
                ids = [int(t["trade_id"]) for t in snapshot["events"][0]["trades"]]
                released = [t.trade_id for t in ex.history["BTC-USD"]]
                assert ids == released[::-1][:100] and ids == list(range(ids[0], ids[0] - 100, -1))
                assert max(seen) in ids
                assert (await recv(ws))["sequence_num"] == 1  # the ack
                ex.resume_feed()
                update = await recv(ws)
                assert update["sequence_num"] == 2 and int(update["events"][0]["trades"][-1]["trade_id"]) == ids[0] + 1

    run(scenario)


def test_coinbase_closes_a_connection_that_does_not_subscribe_in_time() -> None:
    async def scenario() -> None:
        async with FakeExchange(
            "coinbase", lines("coinbase"), subscribe_deadline_s=0.3, heartbeat_interval_s=0.05
        ) as ex:
            opened = time.monotonic()
            async with client(ex.url) as late:
                await late.send('{"type":"hello"}')  # not a subscribe: the deadline stands
                assert await recv(late) == {"type": "error", "message": "failure to subscribe"}
                await asyncio.wait_for(late.wait_closed(), 5)
                assert time.monotonic() - opened >= 0.3
                assert (late.close_code, late.close_reason) == (1000, "no subscribe within 0.3 s")
            async with client(ex.url) as ws:
                opened = time.monotonic()
                await ws.send('{"type":"subscribe","channel":"heartbeats"}')
                # still served well past the deadline
                frames = await recv_until(ws, lambda f: time.monotonic() - opened > 0.6)
                assert frames[-1]["channel"] == "heartbeats"

    run(scenario)


def test_coinbase_other_channels_only_reach_their_subscribers() -> None:
    recorded = [orjson.loads(line) for line in lines("coinbase")]
    btc_tickers = [
        f for f in recorded if f["channel"] == "ticker" and f["events"][0]["tickers"][0]["product_id"] == "BTC-USD"
    ]

    async def scenario() -> None:
        async with FakeExchange("coinbase", lines("coinbase"), speed=None) as ex:
            ex.pause_feed()
            async with client(ex.url) as ws:
                await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channel":"ticker"}')
                ack = await recv(ws)
                assert ack["events"] == [{"subscriptions": {"ticker": ["BTC-USD"]}}]
                ex.resume_feed()
                await ex.wait_until(ex.finished.is_set)
                got = [await recv(ws) for _ in btc_tickers]
                await ws.send('{"type":"unsubscribe","product_ids":[],"channel":"ticker"}')
                assert (await recv(ws))["events"] == [{"subscriptions": {}}]  # nothing came in between
        assert [(f["channel"], f["sequence_num"], f["events"]) for f in got] == [
            ("ticker", i + 1, f["events"]) for i, f in enumerate(btc_tickers)
        ]
        assert ex.served == []

    run(scenario)


def test_coinbase_loop_renumbers_contiguously_across_the_boundary() -> None:
    few = [line for line in lines("coinbase") if b'"update"' in line and b"BTC-USD" in line][:5]
    ids_per_lap = sum(len(orjson.loads(line)["events"][0]["trades"]) for line in few)

    async def scenario() -> None:
        async with FakeExchange("coinbase", few, speed=None, loop=True) as ex, client(ex.url) as ws:
            await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channel":"market_trades"}')
            await ex.wait_until(lambda: len(ex.served) >= 3 * ids_per_lap)
            ex.pause_feed()
            trades: list[Any] = []
            while len(trades) < 3 * ids_per_lap:
                frame = await recv(ws)
                if frame["channel"] == "market_trades" and frame["events"][0]["type"] == "update":
                    trades += reversed(frame["events"][0]["trades"])  # newest first in a message
        ids = [int(t["trade_id"]) for t in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        times = [rfc3339_to_ns(t["time"]) for t in trades]
        assert times == sorted(times)

    run(scenario)


def test_coinbase_rest_ticker_answers_the_window_newest_first() -> None:
    async def scenario() -> None:
        async with FakeExchange("coinbase", lines("coinbase"), speed=None) as ex, FakeRest(ex) as rest:
            async with client(ex.url) as ws:
                await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channel":"market_trades"}')
                await ex.wait_until(ex.finished.is_set)
            released = list(ex.history["BTC-USD"])
            base = f"{rest.url}/api/v3/brokerage/market/products/BTC-USD/ticker"
            status, answer = await http_get(f"{base}?limit=5")
            assert status == 200
            assert answer["trades"] == [orjson.loads(t.element) for t in released[::-1][:5]]
            assert set(answer["trades"][0]) == {"trade_id", "product_id", "price", "size", "time", "side"}
            assert answer["best_bid"] == next(t.price for t in reversed(released) if b'"BUY"' in t.element)
            assert answer["best_ask"] == next(t.price for t in reversed(released) if b'"SELL"' in t.element)
            start, end = released[10].ts_ns // 10**9, released[-10].ts_ns // 10**9
            _, window = await http_get(f"{base}?limit=1000&start={start}&end={end}")
            wanted = [t for t in released if start * 10**9 <= t.ts_ns < end * 10**9][::-1]
            assert [int(t["trade_id"]) for t in window["trades"]] == [t.trade_id for t in wanted] and wanted
            assert (await http_get(f"{rest.url}/api/v3/brokerage/market/products/DOGE-USD/ticker"))[0] == 404

    run(scenario)


# -- faults -----------------------------------------------------------------------------------------------


KRAKEN_SUBSCRIBE = (
    '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false},"req_id":1}'
)


@asynccontextmanager
async def kraken_subscribed(**options: Any) -> AsyncIterator[tuple[FakeExchange, ClientConnection]]:
    async with FakeExchange("kraken", lines("kraken"), speed=None, **options) as ex, client(ex.url) as ws:
        await ws.send(KRAKEN_SUBSCRIBE)
        await recv_until(ws, is_update)
        yield ex, ws


def test_drop_connections_cuts_without_a_close_frame_and_the_client_reconnects() -> None:
    async def scenario() -> None:
        async with kraken_subscribed() as (ex, ws):
            await ex.drop_connections()
            assert ex.active == 0
            with pytest.raises(ConnectionClosedError) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is None, "no close frame"
            async with client(ex.url) as again:
                assert (await recv(again))["channel"] == "status"
                assert ex.connections == 2 and ex.active == 1

    run(scenario)


@pytest.mark.parametrize(("code", "reason"), [(1008, "policy violation"), (1001, "going away")])
def test_close_all_sends_the_close_code(code: int, reason: str) -> None:
    async def scenario() -> None:
        async with kraken_subscribed() as (ex, ws):
            await ex.close_all(code, reason)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, reason)
            assert ex.active == 0

    run(scenario)


def test_pause_silences_trades_heartbeats_and_pongs() -> None:
    async def scenario() -> None:
        async with kraken_subscribed(heartbeat_interval_s=0.05) as (ex, ws):
            ex.pause_feed()
            await ex.wait_until(lambda: ex.idle)
            await recv_until(ws, is_heartbeat)  # only heartbeats flow now
            ex.pause(0.4)
            silenced = time.monotonic()
            await ws.send('{"method":"ping","req_id":5}')  # never answered
            arrivals, frames, pinged = [silenced], list[Any](), False
            while not frames or frames[-1].get("method") != "pong":
                frames.append(await recv(ws))
                arrivals.append(time.monotonic())
                if not pinged and arrivals[-1] - silenced > 0.4:
                    await ws.send('{"method":"ping","req_id":6}')
                    pinged = True
        assert [f["req_id"] for f in frames if f.get("method") == "pong"] == [6]
        assert all(is_heartbeat(f) for f in frames[:-1])
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert max(gaps) >= 0.35, "nothing came while silent (heartbeats are 0.05 s apart otherwise)"

    run(scenario)


def test_pause_feed_holds_the_position_and_resume_continues_it() -> None:
    async def scenario() -> None:
        async with kraken_subscribed(heartbeat_interval_s=0.05) as (ex, ws):
            ex.pause_feed()
            await ex.wait_until(lambda: ex.idle)
            held = list(ex.served)
            frames = await recv_until(ws, is_heartbeat)
            got = [t["trade_id"] for f in frames if is_update(f) for t in f["data"]]
            assert await recv(ws) == {"channel": "heartbeat"} and ex.served == held
            ex.resume_feed()
            update = (await recv_until(ws, is_update))[-1]
            assert update["data"][0]["trade_id"] == held[-1][1] + 1
            assert not got or got[-1] == held[-1][1]

    run(scenario)


def test_hang_connections_writes_nothing_answers_no_ping_and_serves_new_connections() -> None:
    async def scenario() -> None:
        async with FakeExchange("kraken", lines("kraken"), speed=50.0, loop=True, heartbeat_interval_s=0.05) as ex:
            async with client(ex.url) as ws:
                await ws.send(KRAKEN_SUBSCRIBE)
                await recv_until(ws, is_update)
                ex.hang_connections()
                served, released = len(ex.served), sum(map(len, ex.history.values()))
                pong = await ws.ping()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pong), 0.5)
                assert sum(map(len, ex.history.values())) > released, "the feed went on"
                assert len(ex.served) == served, "nothing was written to the hung connection"
                async with client(ex.url) as other:
                    assert (await recv(other))["channel"] == "status"
                    assert ex.active == 2, "the hung socket stays open"
                ws.transport.abort()  # a closing handshake would wait for the hung peer
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 2.0, "stop() does not wait for a hung peer"

    run(scenario)


def test_send_raw_reaches_every_client_verbatim() -> None:
    async def scenario() -> None:
        async with kraken_subscribed() as (ex, ws):
            ex.pause_feed()
            await ex.wait_until(lambda: ex.idle)
            async with client(ex.url) as other:
                await recv(other)  # status
                await ex.send_raw("this is not json {")
                await ex.send_raw(b"\x00\xff", binary=True)
                for conn in (ws, other):
                    frames = [await asyncio.wait_for(conn.recv(), 5) for _ in range(2)]
                    while frames[0] != "this is not json {":  # the subscribed one may have trades in flight
                        frames = [frames[1], await asyncio.wait_for(conn.recv(), 5)]
                    assert frames == ["this is not json {", b"\x00\xff"]

    run(scenario)


# -- serving a folder -------------------------------------------------------------------------------------


def test_run_replay_serves_every_capture_in_a_folder(tmp_path: Path) -> None:
    for name in ("binance", "kraken", "coinbase"):
        (tmp_path / f"{name}.jsonl").write_bytes((CAPTURES / f"{name}.jsonl").read_bytes())
    (tmp_path / "coinbase.sent.jsonl").write_text("ignored\n")

    async def scenario() -> None:
        ready: asyncio.Future[dict[str, Endpoints]] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            run_replay(tmp_path, speed=None, loop=False, on_ready=lambda e: ready.set_result(dict(e)))
        )
        endpoints = await asyncio.wait_for(ready, 10)
        assert sorted(endpoints) == ["binance", "coinbase", "kraken"]
        async with client(endpoints["binance"].ws_url + "?streams=zilusdt@aggTrade") as ws:
            assert (await recv(ws))["data"]["a"] == 18938405
        async with client(endpoints["kraken"].ws_url) as ws:
            assert (await recv(ws))["channel"] == "status"
        async with client(endpoints["coinbase"].ws_url) as ws:
            await ws.send('{"type":"subscribe","product_ids":["ETH-USD"],"channel":"market_trades"}')
            assert (await recv(ws))["events"][0]["type"] == "snapshot"
        status, _ = await http_get(f"{endpoints['kraken'].rest_url}/0/public/Trades?pair=BTC/USD")
        assert status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario)
    assert capture_urls(tmp_path, ports={"binance": 9201, "kraken": 9202, "coinbase": 9203}) == {
        "binance": "ws://127.0.0.1:9201/stream",
        "kraken": "ws://127.0.0.1:9202/v2",
        "coinbase": "ws://127.0.0.1:9203",
    }
    with pytest.raises(ConfigError):
        capture_urls(tmp_path, ports={"binance": 9201})
    with pytest.raises(ConfigError):
        asyncio.run(run_replay(tmp_path / "nowhere", speed=1.0, loop=False))
    with pytest.raises(ConfigError):
        asyncio.run(run_replay(tmp_path, speed=1.0, loop=False, ports={"binanse": 1}))
