"""Benchmark: topic → silver throughput, produce → silver latency, embedded ClickHouse RSS.

Starts its own Tansu broker and embedded ClickHouse (nothing else may use their ports), fills the
Binance topic with N trade records, then creates the schema so the Kafka-table consumer starts from
the earliest offset, and times how fast silver fills (with all six gold MVs attached). Then it
publishes at a fixed rate and reads per-trade latency (silver ts_ingested − ts_received, the
producer's send time) from ClickHouse.

    .venv/bin/python bench/ingest.py --trades 1000000 --rate 5000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import clickhouse_connect
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from k2.embedded.chdb_engine import ChdbEngine
from k2.embedded.kafka_ddl import rewrite_create_kafka
from k2.embedded.kafka_engine import KafkaTableConsumer, build_block, split_by_key
from k2.embedded.kafka_fetch import Fetched, GroupFetcher
from k2.gc_policy import tune_gc
from k2.migrations import default_sql_dir, discover, migrate
from k2.settings import KAFKA_LINGER_MS, load_settings
from k2.topics import ensure_topics
from tests.support import cpu_seconds, create_schema, free_port, http_ok, tansu_broker, wait_for

TOPIC = "market.crypto.trades.binance"
SYMBOLS = [("BTCUSDT", "BTC-USDT"), ("ETHUSDT", "ETH-USDT"), ("SOLUSDT", "SOL-USDT"), ("BNBUSDT", "BNB-USDT")]


def record(i: int, ts_ns: int, received_ns: int) -> bytes:
    symbol, canonical = SYMBOLS[i % len(SYMBOLS)]
    return orjson.dumps(
        {
            "exchange": "binance",
            "symbol": symbol,
            "canonical_symbol": canonical,
            "trade_id": str(4_000_000_000 + i),
            "price": f"{65000 + (i % 5000) / 100:.8f}",
            "quantity": f"0.{(i * 7919) % 99999999 + 1:08d}",
            "side": "buy" if i % 3 else "sell",
            "ts_event_ns": ts_ns,
            "ts_received_ns": received_ns,
            "event_time_ns": ts_ns + 1_000_000,
            "is_buyer_maker": i % 3 == 0,
            "stream_type": "trade",
            "first_trade_id": None,
            "last_trade_id": None,
        }
    )


async def fill(bootstrap: str, n: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1_048_576)
    await producer.start()
    start = time.perf_counter()
    base = time.time_ns() - n * 1000
    try:
        pending = []
        for i in range(n):
            pending.append(
                await producer.send(TOPIC, record(i, base + i * 1000, base + i * 1000), key=SYMBOLS[i % 4][0].encode())
            )
            if len(pending) >= 50_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - start


async def paced(bootstrap: str, rate: int, seconds: float, first_id: int, linger_ms: int) -> int:
    # produced the way the feed handlers produce (KafkaSink): acks=all, their linger, zstd
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, compression_type="zstd")
    await producer.start()
    sent = 0
    start = time.monotonic()
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                now = time.time_ns()
                await producer.send(TOPIC, record(first_id + sent, now, now), key=SYMBOLS[sent % 4][0].encode())
                sent += 1
            await asyncio.sleep(0.001)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def shipped_block_rows() -> int:
    """``kafka_max_block_size`` of the shipped Binance queue table: the largest block the consumer inserts."""
    queue = next(m for m in discover(default_sql_dir()) if m.name == "bronze/binance_trades_queue.sql")
    rewritten = rewrite_create_kafka(queue.render({"KAFKA_BROKER_LIST": "127.0.0.1:9"}))
    assert rewritten is not None
    return rewritten[1].max_block_size


def chain_floor(n: int, block_rows: int, lanes: int = 1) -> float:
    """Rows/s of the embedded ClickHouse's insert chain alone, in this process.

    The blocks the Kafka-table consumer inserts (queue -> bronze -> silver -> gold 1m -> five roll-ups),
    built from the same records beforehand and inserted one after another: no broker, no fetch, no
    overlap. What topic -> silver would reach if consuming cost nothing. ``lanes`` as the embedded server's
    ``K2_CLICKHOUSE_INSERT_LANES``.
    """
    now_ns = time.time_ns()
    blocks = []
    for first in range(0, n, block_rows * lanes):  # a poll's worth: lanes x kafka_max_block_size
        rows = range(first, min(n, first + block_rows * lanes))
        blocks.append(build_block(Fetched(
            values=[record(i, now_ns + i, now_ns + i) for i in rows], keys=[SYMBOLS[i % len(SYMBOLS)][0].encode() for i in rows],
            offsets=list(rows), timestamps=[now_ns // 1_000_000] * len(rows), runs=[(TopicPartition(TOPIC, 0), len(rows))],
        )))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="k2-bench-chain-") as tmp:
        engine = ChdbEngine(Path(tmp))
        try:
            spec = create_schema(engine)["binance_trades_queue"]
            consumer = KafkaTableConsumer(engine, dataclasses.replace(spec, max_block_size=block_rows), lanes=lanes)
            start = time.perf_counter()
            for block in blocks:
                consumer.insert(block)
            elapsed = time.perf_counter() - start
            consumer.close()
            landed = int(engine.execute("SELECT count() FROM k2.silver_trades").data)
            assert landed == n, f"silver holds {landed} rows, expected {n}"
        finally:
            engine.close()
    return n / elapsed


async def fetch_floor(bootstrap: str, n: int, lanes: int) -> tuple[float, float]:
    """(rows/s, share of a core) of the Kafka engine's consumer alone: fetch ``n`` filled messages and build
    (and split) their blocks as the consumer does, inserting nothing. Under the embedded server's GC policy."""
    fetcher = GroupFetcher(bootstrap, f"k2-bench-fetch-{time.time_ns()}", (TOPIC,), max_wait_ms=100)
    await fetcher.start()
    try:
        poll = shipped_block_rows() * lanes  # a poll's worth, as the consumer takes
        got, start, cpu = 0, time.perf_counter(), time.process_time()
        while got < n:
            fetched = await fetcher.fetch(poll, 100)
            got += len(fetched)
            split_by_key(build_block(fetched), lanes)
        elapsed = time.perf_counter() - start
        return got / elapsed, (time.process_time() - cpu) / elapsed
    finally:
        await fetcher.stop()


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=40)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--chain-floor", action="store_true", help="only time the insert chain in-process")
    parser.add_argument("--block-rows", type=int, default=0, help="--chain-floor's block size (default: the "
                        "shipped queue tables' kafka_max_block_size)")  # fmt: skip
    parser.add_argument("--fetch-floor", action="store_true", help="only time the consumer's fetch and blocks")
    parser.add_argument("--lanes", type=int, default=load_settings().clickhouse_insert_lanes,
                        help="K2_CLICKHOUSE_INSERT_LANES of the embedded ClickHouse (default: the setting's)")  # fmt: skip
    parser.add_argument("--linger-ms", type=int, default=KAFKA_LINGER_MS, help="paced producer's linger (default: "
                        "the handlers')")  # fmt: skip
    args = parser.parse_args()
    if args.chain_floor:
        block_rows = args.block_rows or shipped_block_rows()
        for _ in range(3):
            print(f"insert chain alone (in-process, {args.trades} rows in blocks of {block_rows:,}, {args.lanes} lanes): "
                  f"{chain_floor(args.trades, block_rows, lanes=args.lanes):,.0f} rows/s")  # fmt: skip
        return

    if args.fetch_floor:
        tune_gc()  # as the embedded server does
        with tansu_broker() as (kafka, _):
            asyncio.run(ensure_topics(kafka, {TOPIC: args.partitions}))
            asyncio.run(fill(kafka, args.trades))
            for _ in range(3):
                rate, core = asyncio.run(fetch_floor(kafka, args.trades, args.lanes))
                print(f"consumer alone (fetch, decode, build and split blocks; no insert): {rate:,.0f} rows/s "
                      f"using {core:.0%} of a core")  # fmt: skip
        return

    work = Path(tempfile.mkdtemp(prefix="k2-bench-"))
    ch_port = free_port()
    clickhouse = None
    with tansu_broker() as (kafka, broker):
        try:
            asyncio.run(ensure_topics(kafka, {TOPIC: args.partitions}))
            fill_s = asyncio.run(fill(kafka, args.trades))
            print(
                f"filled {TOPIC}: {args.trades} records in {fill_s:.1f}s ({args.trades / fill_s:,.0f} msg/s produced)"
            )

            clickhouse = subprocess.Popen(
                [sys.executable, "-m", "k2.embedded.clickhouse_server", "--data-dir", str(work / "ch"), "--port", str(ch_port)],
                stdout=(work / "clickhouse.log").open("wb"), stderr=subprocess.STDOUT,
                env={**os.environ, "K2_CLICKHOUSE_INSERT_LANES": str(args.lanes)},
            )  # fmt: skip
            wait_for(lambda: http_ok(f"http://127.0.0.1:{ch_port}/ping"), 60, "embedded ClickHouse")
            client = clickhouse_connect.get_client(host="127.0.0.1", port=ch_port)
            start = time.perf_counter()
            migrate(client, default_sql_dir(), {"KAFKA_BROKER_LIST": kafka})
            wait_for(lambda: client.command("SELECT count() FROM k2.silver_trades") > 0, 600, "first silver rows")
            cpu_start = cpu_seconds(clickhouse.pid), cpu_seconds(broker.pid), time.perf_counter()
            wait_for(
                lambda: client.command("SELECT count() FROM k2.silver_trades") >= args.trades, 600, "silver filled"
            )
            filled_at_us = time.time_ns() // 1000  # polled every 50 ms: at most that late
            wall_s = time.perf_counter() - start
            ch_cpu, broker_cpu = cpu_seconds(clickhouse.pid) - cpu_start[0], cpu_seconds(broker.pid) - cpu_start[1]
            cpu_wall_s = time.perf_counter() - cpu_start[2]
            # ts_ingested is stamped when an insert's silver step starts: the span from the first insert's to the
            # last one's covers every insert but the last, so the last insert's rows are not counted in it. With
            # insert lanes the last block is several inserts, and its other parts are counted although they ran
            # after that span; the rate to the moment silver was seen full counts every insert whole.
            span_us, first_us, first_rows, last_rows = client.query(
                "SELECT dateDiff('microsecond', min(ts_ingested), max(ts_ingested)), toUnixTimestamp64Micro(min(ts_ingested)), "
                "countIf(ts_ingested = (SELECT min(ts_ingested) FROM k2.silver_trades)), "
                "countIf(ts_ingested = (SELECT max(ts_ingested) FROM k2.silver_trades)) FROM k2.silver_trades"
            ).result_rows[0]
            span_s = span_us / 1e6
            rss, peak = rss_mb(clickhouse.pid)
            print(f"topic -> silver ({args.lanes} insert lanes): {args.trades} trades, {args.trades / wall_s:,.0f} rows/s wall clock "
                  f"(schema creation, consumer group join included: {wall_s:.1f}s); "
                  f"{(args.trades - last_rows) / span_s:,.0f} rows/s from the first silver insert's start to the "
                  f"last one's ({span_s:.1f}s, the last insert's {last_rows:,} rows not counted); "
                  f"{(args.trades - first_rows) / ((filled_at_us - first_us) / 1e6):,.0f} rows/s from the first silver "
                  f"insert's start to silver seen full (the first insert's {first_rows:,} rows not counted)")  # fmt: skip
            rows = args.trades - int(first_rows)
            print(f"CPU per row after the first silver block: embedded ClickHouse {ch_cpu / rows * 1e6:.1f} us "
                  f"(consumer + MV chain + merges; {ch_cpu / cpu_wall_s:.0%} of a core), "
                  f"broker {broker_cpu / rows * 1e6:.1f} us")  # fmt: skip
            gold = client.command("SELECT sum(trade_count) FROM k2.ohlcv_1m")
            assert gold == args.trades, f"gold 1m counts {gold} trades, expected {args.trades}"
            print(f"embedded ClickHouse RSS after ingest: {rss:.0f} MB (peak {peak:.0f} MB)")

            paced_cpu = cpu_seconds(clickhouse.pid), cpu_seconds(broker.pid), time.perf_counter()
            sent = asyncio.run(paced(kafka, args.rate, args.seconds, args.trades, args.linger_ms))
            paced_wall = time.perf_counter() - paced_cpu[2]
            print(f"while producing at {args.rate}/s: embedded ClickHouse used "
                  f"{(cpu_seconds(clickhouse.pid) - paced_cpu[0]) / paced_wall:.0%} of a core, "
                  f"broker {(cpu_seconds(broker.pid) - paced_cpu[1]) / paced_wall:.0%}")  # fmt: skip
            total = args.trades + sent
            wait_for(lambda: client.command("SELECT count() FROM k2.silver_trades") >= total, 120, "paced trades")
            p50, p99, pmax = client.query(
                "SELECT quantiles(0.5, 0.99, 1)(dateDiff('microsecond', ts_received, ts_ingested)) / 1000 "
                f"FROM k2.silver_trades WHERE trade_id_num >= {4_000_000_000 + args.trades}"
            ).result_rows[0][0]
            print(f"produce -> visible in silver at {args.rate}/s for {args.seconds:.0f}s ({sent} trades): "
                  f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {pmax:.0f} ms")  # fmt: skip
            windows = client.query(
                "SELECT intDiv(trade_id_num - {first:UInt64}, {per:UInt64}) AS w, "
                "quantiles(0.5, 0.99, 1)(dateDiff('microsecond', ts_received, ts_ingested)) / 1000 "
                "FROM k2.silver_trades WHERE trade_id_num >= {first:UInt64} GROUP BY w ORDER BY w",
                parameters={"first": 4_000_000_000 + args.trades, "per": args.rate * 5},
            ).result_rows
            print(
                "  by 5 s window (p50/p99/max ms): "
                + ", ".join(f"{q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}" for _, q in windows)
            )
            rss, peak = rss_mb(clickhouse.pid)
            print(f"embedded ClickHouse RSS at the end: {rss:.0f} MB (peak {peak:.0f} MB)")
        finally:
            if clickhouse is not None:
                clickhouse.terminate()
                clickhouse.wait(timeout=30)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
