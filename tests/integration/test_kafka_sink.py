"""KafkaSink against a real broker: every message lands on its key's partition, in submission order, with its
key, value and headers exactly as submitted, also when one partition's messages fill more than one batch."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from feed_handlers.publisher import NO_HEADERS, KafkaSink, Message, new_message
from k2.topics import ensure_topics
from tests.support import tansu_broker

TOPIC, RAW = "sink.test.trades", "sink.test.trades.raw"
PARTITIONS = 3
Record = tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]  # partition, key, value, headers


def _messages() -> list[Message]:
    out = []
    for i in range(300):
        symbol = (b"BTCUSDT", b"ETHUSDT", b"SOLUSDT", b"XRPUSDT")[i % 4]
        received = str(1_795_000_000_000_000_000 + i).encode()
        out.append(new_message((RAW, b"binance", b'{"frame":%d}' % i, [("ts_received_ns", received)], 0)))
        out.append(new_message((TOPIC, symbol, b'{"trade_id":"%d"}' % i, NO_HEADERS, 0)))
    # headers given as a tuple (the dead-letter path's), and values big enough that one key's messages
    # need three 1 MiB batches
    big = [Message(TOPIC, b"BIGUSDT", bytes([65 + i]) * 600_000, (("reason", b"r%d" % i), ("n", b"%d" % i)))
           for i in range(5)]  # fmt: skip
    return out[:200] + big + out[200:]


def _expected(messages: list[Message]) -> dict[str, list[Record]]:
    partitioner, everyone = DefaultPartitioner(), list(range(PARTITIONS))
    expected: dict[str, list[Record]] = {TOPIC: [], RAW: []}
    for m in messages:
        partition = partitioner(m.key, everyone, everyone)
        expected[m.topic].append((partition, m.key, m.value, list(m.headers)))
    return expected


async def _read(bootstrap: str, topic: str) -> list[Record]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=16 << 20)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        by_partition: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                by_partition[tp.partition].extend(
                    (tp.partition, r.key, r.value, [(k, v) for k, v in r.headers]) for r in records
                )
        return [record for p in range(PARTITIONS) for record in by_partition[p]]
    finally:
        await consumer.stop()


def test_every_message_lands_on_its_partition_in_order_with_key_value_and_headers() -> None:
    messages = _messages()
    with tansu_broker() as (bootstrap, _):
        asyncio.run(ensure_topics(bootstrap, {TOPIC: PARTITIONS, RAW: PARTITIONS}))

        async def send() -> list[BaseException | None]:
            sink = KafkaSink(bootstrap, idempotence=False)
            await sink.start()
            try:
                return await (await sink.submit(messages))
            finally:
                await sink.stop()

        results = asyncio.run(send())
        landed = {topic: asyncio.run(_read(bootstrap, topic)) for topic in (TOPIC, RAW)}

    assert results == [None] * len(messages)
    expected = _expected(messages)
    for topic in (TOPIC, RAW):
        # per partition in submission order: sorting by partition keeps each partition's own order
        assert landed[topic] == sorted(expected[topic], key=lambda r: r[0]), topic


def test_a_batch_lingers_unless_a_backlog_waits_behind_it() -> None:
    linger_s = 3.0
    with tansu_broker() as (bootstrap, _):
        asyncio.run(ensure_topics(bootstrap, {TOPIC: PARTITIONS, RAW: PARTITIONS}))

        # two keys on different partitions: aiokafka sends a partition's batches in order, so a batch queued
        # behind a lingering one on the same partition waits for it
        partitioner, everyone = DefaultPartitioner(), list(range(PARTITIONS))
        alone, behind = b"BTCUSDT", next(k for k in (b"SOLUSDT", b"XRPUSDT", b"ETHUSDT", b"BNBUSDT")
                                         if partitioner(k, everyone, everyone) != partitioner(b"BTCUSDT", everyone, everyone))  # fmt: skip

        async def send() -> tuple[bool, bool]:
            sink = KafkaSink(bootstrap, idempotence=False, linger_ms=int(linger_s * 1000))
            await sink.start()
            try:
                await (await sink.submit([Message(TOPIC, alone, b"warm-up")], backlog=True))  # metadata known
                lingering = asyncio.ensure_future(await sink.submit([Message(TOPIC, alone, b"alone")]))
                sent_at_once = await sink.submit([Message(TOPIC, behind, b"more behind")], backlog=True)
                acked_at_once = await asyncio.wait_for(sent_at_once, linger_s / 2) == [None]
                held = not lingering.done()  # still waiting for company
                await lingering
                return acked_at_once, held
            finally:
                await sink.stop()

        acked_at_once, held = asyncio.run(send())
    assert acked_at_once, "a batch with a backlog behind it waited for the linger"
    assert held, "a batch with nothing behind it did not linger"
