"""The embedded Kafka engine's consumer against a real broker: exact values, keys and offsets, a block
cut anywhere resumes exactly where it stopped, and committed offsets are the group's (a new consumer of
the same group starts after them, another group from the earliest offset)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from k2.embedded.kafka_fetch import Fetched, GroupFetcher
from k2.topics import ensure_topics
from tests.support import tansu_broker

TOPIC = "fetch.test"
PARTITIONS = 3


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with tansu_broker() as (bootstrap, _):
        asyncio.run(ensure_topics(bootstrap, {TOPIC: PARTITIONS}))
        asyncio.run(_produce(bootstrap, 3000))
        yield bootstrap


async def _produce(bootstrap: str, n: int) -> None:
    # small batches (compressed, as the handlers send them) so a fetch answer holds many record batches
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=4096, linger_ms=2, compression_type="zstd")
    await producer.start()
    try:
        for i in range(n):
            await producer.send(TOPIC, b'{"n":%d}' % i, key=b"k%d" % (i % 5), partition=i % PARTITIONS,
                                timestamp_ms=1_795_000_000_000 + i)  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()


def _expected(tp: TopicPartition, offset: int) -> tuple[bytes, bytes, int]:
    i = offset * PARTITIONS + tp.partition  # message i went to partition i % 3 at offset i // 3
    return b'{"n":%d}' % i, b"k%d" % (i % 5), 1_795_000_000_000 + i


def _rows(fetched: Fetched) -> list[tuple[TopicPartition, int, bytes | None, bytes | None, int]]:
    partitions = [tp for tp, n in fetched.runs for _ in range(n)]
    return list(zip(partitions, fetched.offsets, fetched.values, fetched.keys, fetched.timestamps, strict=True))


async def _drain(fetcher: GroupFetcher, block: int, total: int) -> list[Fetched]:
    blocks: list[Fetched] = []
    while sum(map(len, blocks)) < total:
        got = await fetcher.fetch(block, 200)
        assert len(got) <= block
        blocks.append(got)
    return blocks


def test_blocks_of_any_size_hold_every_message_once_with_its_lineage(broker: str) -> None:
    async def run() -> list[Fetched]:
        fetcher = GroupFetcher(broker, "fetch-any-size", (TOPIC,), max_wait_ms=200)
        await fetcher.start()
        try:
            blocks = await _drain(fetcher, 777, 3000)  # 777: cuts record batches in the middle
            assert len(await fetcher.fetch(777, 50)) == 0  # nothing more, nothing twice
            assert fetcher.highwater == {TopicPartition(TOPIC, p): 1000 for p in range(PARTITIONS)}
            return blocks
        finally:
            await fetcher.stop()

    blocks = asyncio.run(run())
    rows = [row for block in blocks for row in _rows(block)]
    assert sorted((tp.partition, offset) for tp, offset, *_ in rows) == [
        (p, o) for p in range(PARTITIONS) for o in range(1000)
    ]
    for tp, offset, value, key, timestamp in rows:
        assert (value, key, timestamp) == _expected(tp, offset)
    for block in blocks:  # first/next bound each partition's run, offsets contiguous in between
        for tp, first in block.first.items():
            offsets = [o for t, o, *_ in _rows(block) if t == tp]
            assert offsets == list(range(first, block.next[tp]))


def test_committed_offsets_are_the_groups_and_a_new_group_starts_at_the_earliest(broker: str) -> None:
    async def run() -> tuple[Fetched, Fetched, Fetched]:
        first = GroupFetcher(broker, "fetch-resume", (TOPIC,), max_wait_ms=200)
        await first.start()
        taken = await first.fetch(1234, 200)
        await first.commit(taken.next)
        await first.stop()
        again = GroupFetcher(broker, "fetch-resume", (TOPIC,), max_wait_ms=200)
        await again.start()
        rest = Fetched()
        for block in await _drain(again, 5000, 3000 - len(taken)):
            rest.extend(block)
        await again.stop()
        other = GroupFetcher(broker, "fetch-other-group", (TOPIC,), max_wait_ms=200)
        await other.start()
        fresh = await other.fetch(10, 200)
        await other.stop()
        return taken, rest, fresh

    taken, rest, fresh = asyncio.run(run())
    assert len(taken) == 1234
    before = {(tp, offset) for tp, offset, *_ in _rows(taken)}
    after = {(tp, offset) for tp, offset, *_ in _rows(rest)}
    assert not before & after
    assert len(before | after) == 3000
    assert min(offset for _, offset, *_ in _rows(fresh)) == 0


def test_a_topic_created_after_the_consumer_started_is_consumed(broker: str) -> None:
    async def run() -> Fetched:
        fetcher = GroupFetcher(broker, "fetch-late-topic", ("fetch.late",), max_wait_ms=100)
        await fetcher.start()
        try:
            assert len(await fetcher.fetch(10, 100)) == 0  # no such topic yet
            await ensure_topics(broker, {"fetch.late": 1})
            producer = AIOKafkaProducer(bootstrap_servers=broker)
            await producer.start()
            await producer.send_and_wait("fetch.late", b'{"late":1}')
            await producer.stop()
            got = Fetched()
            async with asyncio.timeout(15):  # found at the next once-a-second metadata check, not in 5 minutes
                while not len(got):
                    got = await fetcher.fetch(10, 100)
            return got
        finally:
            await fetcher.stop()

    got = asyncio.run(run())
    assert (got.values, got.offsets, [tp.topic for tp, _ in got.runs]) == ([b'{"late":1}'], [0], ["fetch.late"])


def test_each_fetch_starts_at_the_next_partition_with_a_backlog(broker: str) -> None:
    """A broker fills its answer partition by partition, in request order: with a backlog in 3 of 12
    partitions, fetches taking a few rows each must start at each of the 3 in turn, not drain one first
    (a block of one partition has one message key, which the Kafka engine cannot split into parts)."""
    topic, loaded = "fetch.turns", (2, 5, 9)

    async def run() -> list[int]:
        await ensure_topics(broker, {topic: 12})
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            for i in range(300):
                await producer.send(topic, b'{"n":%d}' % i, key=b"k", partition=loaded[i % 3])
            await producer.flush()
        finally:
            await producer.stop()
        fetcher = GroupFetcher(broker, "fetch-turns", (topic,), max_wait_ms=100)
        await fetcher.start()
        try:
            firsts = []
            for _ in range(4):
                got = await fetcher.fetch(40, 200)
                assert len(got) == 40
                firsts.append(got.runs[0][0].partition)
            return firsts
        finally:
            await fetcher.stop()

    firsts = asyncio.run(run())
    # the first fetch learns where each partition ends; from then on every fetch opens with the next one
    assert sorted(firsts[1:]) == list(loaded), firsts
