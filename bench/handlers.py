"""Benchmark: feed handler throughput per venue on one core, against a bare orjson ceiling.

For each venue, N trade frames (real captured frames, replicated with fresh trade ids) go through
what the live handler does per frame — raw-frame publish, pure venue parse, dedup/gap state,
normalized record publish — into a real Tansu broker, until the broker acknowledged every message.
The ceiling is ``orjson.dumps(orjson.loads(frame))`` over the same frames. Also reports
frame-received → produce-acked latency percentiles from a paced run (``--rate`` trades/s for
``--seconds``), measured by a sink wrapper that only that run uses.

Next to both, the floor: the least any handler publishing through aiokafka can do per trade — read the
frame, write its normalized record, append both messages to zstd record batches and build them — with
no validation, dedup state, metrics or network. It bounds what the target "50 % of the ceiling" could
mean for a Python handler on this machine. And the parse floor: the same with the venue's real parser
(every field validated, the record built) and ``TradeRecord.to_json`` in place of loads/dumps, still
with no dedup state, buffer, metrics or network: the least a handler that keeps DESIGN.md's trade
contract can do. The handler's own glue is what lies between it and the handler's figure. And the
receive floor (``bench/receive_floor.py``): frames/s through the handlers' WebSocket client with nothing
done to them. The saturated runs hand frames to the handler directly, so that cost comes on top in a live
handler; it alone bounds what share of the ceiling a handler on ``websockets`` can reach. Finally the live
handler: ``FeedHandler.run`` whole, its runner reading the frames from that local server over a WebSocket,
so receiving, the read watchdog and everything after it are counted.

The machine may be shared: each saturated run is repeated ``--runs`` times and reported as best and
range, next to the handler process's own CPU time (trades per CPU-second), which other load inflates
less than wall time. The ceiling is the best of three passes. This VM's speed drifts by 2x within
minutes, so each run is paired with a parse-floor pass just before it and their ratio is printed: the
share of the handler's time that is not parsing, which is what the handler's own code decides.

    PYTHONPATH=. .venv/bin/python bench/handlers.py --trades 100000 --rate 5000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson
from aiokafka.record.default_records import DefaultRecordBase, DefaultRecordBatchBuilder

from bench.receive_floor import encode_frames, receive_floor, serving
from feed_handlers.exchanges import VENUES
from feed_handlers.handler import FeedHandler, HandlerOptions
from feed_handlers.instruments import ExchangeConfig, Instrument, topic_names
from feed_handlers.publisher import KafkaSink, Message, Publisher
from feed_handlers.transport import WebSocketTransport
from k2.gc_policy import tune_gc
from k2.topics import ensure_topics
from tests.support import tansu_broker

CONFIGS = {
    "binance": ExchangeConfig(ws_url="ws://x", channel="trade", partitions=4,
                              symbols=(Instrument(symbol="BTCUSDT", canonical="BTC-USDT"),)),
    "kraken": ExchangeConfig(ws_url="ws://x", channel="trade", partitions=4,
                             symbols=(Instrument(symbol="BTC/USD", canonical="BTC-USD"),)),
    "coinbase": ExchangeConfig(ws_url="ws://x", channel="market_trades", partitions=4,
                               symbols=(Instrument(symbol="BTC-USD", canonical="BTC-USD"),)),
}  # fmt: skip


def frames(venue: str, n: int) -> list[bytes]:
    """n one-trade frames shaped exactly like the venue's (ids contiguous), from a real frame."""
    out = []
    for i in range(n):
        if venue == "binance":
            out.append(orjson.dumps({"stream": "btcusdt@trade", "data": {
                "e": "trade", "E": 1_795_000_000_000 + i, "s": "BTCUSDT", "t": 10_000_000 + i,
                "p": f"{65000 + i % 1000}.12000000", "q": "0.00214000", "T": 1_795_000_000_000 + i,
                "m": i % 2 == 0, "M": True}}))  # fmt: skip
        elif venue == "kraken":
            out.append(b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":'
                       + f"{65000 + i % 1000}.1".encode() + b',"qty":0.00123456,"ord_type":"limit","trade_id":'
                       + str(5_000_000 + i).encode() + b',"timestamp":"2026-11-22T10:00:00.123456Z"}]}')  # fmt: skip
        else:
            out.append(orjson.dumps({"channel": "market_trades", "timestamp": "2026-11-22T10:00:00.123456789Z",
                "sequence_num": i, "events": [{"type": "update", "trades": [{"product_id": "BTC-USD",
                "trade_id": str(1_068_572_090 + i), "price": f"{65000 + i % 1000}.67", "size": "0.002186",
                "time": "2026-11-22T10:00:00.514318Z", "side": "SELL"}]}]}))  # fmt: skip
    return out


def ceiling(data: Sequence[bytes]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for frame in data:
            orjson.dumps(orjson.loads(frame))
        best = min(best, time.perf_counter() - start)
    return len(data) / best


def floor(venue: str, data: Sequence[bytes]) -> float:
    """Trades/s of the floor (module docstring): best of five passes, one frame and one trade at a time."""
    parse, canonical = VENUES[venue].parse, {i.symbol: i.canonical for i in CONFIGS[venue].symbols}
    records = [orjson.loads(t.to_json()) for f in data for t in parse(f, ts_received_ns=1, canonical=canonical).trades]
    assert len(records) == len(data), "the bench frames hold one trade each"
    header = [("ts_received_ns", b"1795000000000000000")]

    def one_pass(raw: _Batches, normalized: _Batches) -> None:
        for frame, record in zip(data, records, strict=True):
            orjson.loads(frame)
            raw.append(b"x", frame, header)
            normalized.append(b"BTC", orjson.dumps(record), [])

    return len(data) / _best_pass_s(one_pass)


def parse_floor(venue: str, data: Sequence[bytes]) -> float:
    """Trades/s of the parse floor (module docstring): the venue parser and ``to_json`` instead of loads/dumps.

    Measured right before each handler run, so that their ratio is taken under the same machine speed.
    """
    parse, canonical = VENUES[venue].parse, {i.symbol: i.canonical for i in CONFIGS[venue].symbols}

    def one_pass(raw: _Batches, normalized: _Batches) -> None:
        for frame in data:
            received = time.time_ns()
            raw.append(b"x", frame, [("ts_received_ns", str(received).encode())])
            for trade in parse(frame, ts_received_ns=received, canonical=canonical).trades:
                normalized.append(trade.symbol.encode(), trade.to_json(), [])

    return len(data) / _best_pass_s(one_pass)


def _best_pass_s(one_pass: Callable[[_Batches, _Batches], None], passes: int = 5) -> float:
    """Seconds of the fastest of ``passes`` runs of ``one_pass`` into fresh raw and normalized batches, built."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        raw, normalized = _Batches(), _Batches()
        one_pass(raw, normalized)
        raw.build()
        normalized.build()
        best = min(best, time.perf_counter() - start)
    return best


class _Batches:
    """One partition's record batches as aiokafka's producer builds them for zstd (no idempotence): a full
    batch is built (compressed) and a new one started."""

    def __init__(self) -> None:
        self._batch = self._new()
        self._offset = 0

    @staticmethod
    def _new() -> DefaultRecordBatchBuilder:
        return DefaultRecordBatchBuilder(2, DefaultRecordBase.CODEC_ZSTD, 0, -1, -1, -1, 1024 * 1024)

    def append(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self._batch.append(self._offset, None, key, value, headers) is None:
            self.build()
            self._batch, self._offset = self._new(), 0
            self._batch.append(self._offset, None, key, value, headers)
        self._offset += 1

    def build(self) -> None:
        self._batch.build()


class TimedSink(KafkaSink):
    """KafkaSink that records receive → ack latency of the normalized trade messages."""

    latencies_ns: list[int]

    async def submit(self, messages: Sequence[Message], *, backlog: bool = False) -> Awaitable[list[BaseException | None]]:
        delivery = await super().submit(messages, backlog=backlog)

        async def timed() -> list[BaseException | None]:
            results = await delivery
            now = time.time_ns()
            self.latencies_ns.extend(now - m.received_ns for m, r in zip(messages, results, strict=True)
                                     if r is None and m.received_ns)  # fmt: skip
            return results

        return timed()


async def through_handler(
    venue: str, data: Sequence[bytes], bootstrap: str, rate: float | None = None
) -> tuple[float, float, list[int]]:
    """Trades/s (wall), trades per handler CPU-second, and receive → ack latencies (paced runs only)."""
    sink = KafkaSink(bootstrap, idempotence=False) if rate is None else TimedSink(bootstrap, idempotence=False)
    latencies: list[int] = []
    if isinstance(sink, TimedSink):
        sink.latencies_ns = latencies
    publisher = Publisher(sink, venue, max_buffered=50_000)
    handler = FeedHandler(venue, CONFIGS[venue], publisher, transport=None,  # type: ignore[arg-type]
                          options=HandlerOptions())  # fmt: skip
    await publisher.start()
    cpu, start = time.process_time(), time.perf_counter()
    for i, frame in enumerate(data):
        if rate is not None:  # paced like a live feed: frame i is due at i / rate
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        await handler.on_frame(frame, time.time_ns(), 1)
    assert await publisher.flush(120.0), "broker did not take everything"
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await publisher.stop()
    assert sum(publisher.stats.trades.values()) == len(data), "every trade published once"
    return len(data) / elapsed, len(data) / cpu, latencies


async def live(venue: str, data: Sequence[bytes], bootstrap: str) -> tuple[float, float]:
    """Trades/s (wall) and trades per handler CPU-second of a whole handler: ``FeedHandler.run`` with its
    ``Runner`` and ``WebSocketTransport`` reading ``data`` from a local WebSocket server that writes it as
    fast as the handler reads, through parse, record and produce, until the broker acknowledged everything.
    Timed from the first frame received."""
    publisher = Publisher(KafkaSink(bootstrap, idempotence=False), venue, max_buffered=50_000)
    with serving(encode_frames(data)) as url:
        handler = FeedHandler(venue, CONFIGS[venue], publisher, transport=WebSocketTransport(),
                              options=HandlerOptions(ws_url=url))  # fmt: skip
        received, first, count = asyncio.Event(), [0.0, 0.0], [0]  # wall and CPU time at the first frame
        handle = handler.runner._on_frame

        async def on_frame(frame: bytes | str, ts_received_ns: int, connection_id: int) -> bool:
            if not count[0]:
                first[:] = time.perf_counter(), time.process_time()
            count[0] += 1
            shutdown = await handle(frame, ts_received_ns, connection_id)
            if count[0] == len(data):
                received.set()
            return shutdown

        handler.runner._on_frame = on_frame
        task = asyncio.create_task(handler.run(handle_signals=False))
        await received.wait()
        assert await publisher.flush(120.0), "broker did not take everything"
        elapsed, cpu = time.perf_counter() - first[0], time.process_time() - first[1]
        handler.stop()
        await task
    assert sum(publisher.stats.trades.values()) == len(data), "every trade published once"
    return len(data) / elapsed, len(data) / cpu


def keep_heap() -> None:
    """Stop glibc from handing freed heap back to the kernel between record batches.

    By default it trims the heap top past 128 KiB and maps each large batch buffer afresh, so a pass pays
    a page fault every second trade or so (Binance and Coinbase frames), which on this VM costs more than
    the parse: measured floors swung 200k-400k trades/s with it. Applied to the whole bench, handler
    runs included, so every figure is under the same allocator.
    """
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    for option, value in ((m_trim_threshold, 1 << 30), (m_top_pad, 256 << 20), (m_mmap_threshold, 32 << 20)):
        if libc.mallopt(option, value) != 1:
            raise OSError(f"mallopt({option}, {value}) failed")


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=5_000.0, help="paced run for latency")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3, help="saturated runs per venue (best and range reported)")
    parser.add_argument("--venues", default=",".join(CONFIGS))
    args = parser.parse_args()
    logging.getLogger("feed_handlers.publisher").setLevel(logging.ERROR)  # "buffer full" is the point here
    keep_heap()
    tune_gc()  # as `k2 handler` does
    os.sched_setaffinity(0, {0})  # one core for the handler; the broker gets the other
    with tansu_broker() as (kafka, broker):
        os.sched_setaffinity(broker.pid, {1})
        for venue in args.venues.split(","):
            asyncio.run(ensure_topics(kafka, dict.fromkeys(topic_names(venue), 4)))
            data = frames(venue, args.trades)
            top, least, received = ceiling(data), floor(venue, data), receive_floor(data)
            _, _, paced = asyncio.run(through_handler(venue, data[: int(args.rate * args.seconds)], kafka, args.rate))
            runs, ratios = [], []
            for _ in range(args.runs):  # each run next to a parse-floor pass: their ratio survives a machine's drift
                parsed = parse_floor(venue, data[:30_000])
                runs.append(asyncio.run(through_handler(venue, data, kafka))[:2])
                ratios.append(runs[-1][0] / parsed)
            best, best_cpu = max(r for r, _ in runs), max(c for _, c in runs)
            whole = [asyncio.run(live(venue, data, kafka)) for _ in range(args.runs)]
            print(f"{venue:8s}: at {args.rate:,.0f} trades/s for {args.seconds:.0f}s, frame received -> produce acked "
                  f"p50 {pct(paced, 0.5):.1f} ms, p99 {pct(paced, 0.99):.1f} ms")  # fmt: skip
            print(f"{venue:8s}: {best:,.0f} trades/s (runs {min(r for r, _ in runs):,.0f}..{best:,.0f}) through parse "
                  f"-> record -> produce (raw + normalized, acked) = {100 * best / top:.0f}% of the orjson "
                  f"loads+dumps ceiling {top:,.0f}/s; {best_cpu:,.0f} trades per handler CPU-second "
                  f"({100 * best_cpu / top:.0f}%)")  # fmt: skip
            print(f"{venue:8s}: floor (read frame, write record, two zstd batch appends; nothing else) {least:,.0f} "
                  f"trades/s = {100 * least / top:.0f}% of the ceiling; the handler does {100 * best / least:.0f}% of it")  # fmt: skip
            print(f"{venue:8s}: live handler (Runner + WebSocket from a local server + the above) "
                  f"{max(r for r, _ in whole):,.0f} trades/s (runs {min(r for r, _ in whole):,.0f}.."
                  f"{max(r for r, _ in whole):,.0f}); {max(c for _, c in whole):,.0f} per handler CPU-second")  # fmt: skip
            print(f"{venue:8s}: receive floor (websockets recv() of the same frames from a local server, nothing else) "
                  f"{received:,.0f} frames/s = {100 * received / top:.0f}% of the ceiling")  # fmt: skip
            print(f"{venue:8s}: parse floor (venue parser, record JSON, two zstd batch appends; no dedup, buffer or "
                  f"network) {parsed:,.0f} trades/s in the last pass; each run did "
                  f"{', '.join(f'{100 * r:.0f}%' for r in ratios)} of the pass just before it")  # fmt: skip


if __name__ == "__main__":
    main()
