"""Benchmark: the embedded broker's (Tansu, memory storage) CPU as its topic grows.

Produces at a fixed rate the way the feed handlers do (acks=all, their linger, zstd), once with no
consumer and once with one consumer group polling every 50 ms, and prints the broker's CPU use every
``--every`` seconds. With the consumer, Tansu's CPU climbs with the data it holds: each fetch costs it
more the more it stores, so an embedded stack that runs for long, or holds a
large backlog, answers fetches ever more slowly. Redpanda (production) has no such cost.

    PYTHONPATH=. .venv/bin/python bench/broker.py --rate 5000 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from k2.settings import KAFKA_LINGER_MS
from k2.topics import ensure_topics
from tests.support import cpu_seconds, tansu_broker

TOPIC = "bench.broker"
VALUE = (
    b'{"exchange":"binance","symbol":"BTCUSDT","trade_id":"4000000000","price":"65000.12000000","quantity":"0.00214"}'
)


async def poll(bootstrap: str) -> None:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id="bench", auto_offset_reset="earliest")
    try:
        await consumer.start()  # inside: a run shorter than the group join cancels it here
        while True:
            await consumer.getmany(timeout_ms=200)
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()


async def produce(
    bootstrap: str, broker_pid: int, rate: int, seconds: float, every: float, consume: bool, linger_ms: int
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, compression_type="zstd")
    await producer.start()
    poller = asyncio.create_task(poll(bootstrap)) if consume else None
    start, sent = time.monotonic(), 0
    mark = (0.0, cpu_seconds(broker_pid))
    samples = []
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            while sent < int(elapsed * rate) + 1:
                await producer.send(TOPIC, VALUE, key=b"BTCUSDT")
                sent += 1
            await asyncio.sleep(0.001)
            if elapsed - mark[0] >= every:
                used = cpu_seconds(broker_pid)
                samples.append(f"{sent:,} held: {(used - mark[1]) / (elapsed - mark[0]):.0%}")
                mark = (elapsed, used)
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await producer.stop()
    print(f"{'one consumer polling' if consume else 'no consumer'}: broker CPU by messages held: " + ", ".join(samples))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--linger-ms", type=int, default=KAFKA_LINGER_MS, help="the producer's linger (default: the handlers')")
    parser.add_argument("--consumer-only", action="store_true", help="skip the run without a consumer")
    args = parser.parse_args()
    for consume in (True,) if args.consumer_only else (False, True):
        with tansu_broker() as (kafka, broker):
            asyncio.run(ensure_topics(kafka, {TOPIC: 1}))
            asyncio.run(produce(kafka, broker.pid, args.rate, args.seconds, args.every, consume, args.linger_ms))


if __name__ == "__main__":
    main()
