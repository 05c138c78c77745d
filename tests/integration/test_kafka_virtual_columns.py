"""A Kafka table's virtual columns hold what the broker holds for each message: key, partition, offset,
timestamp and headers (``_headers.name`` / ``_headers.value``, empty for a message without any)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from tests.support import Stack, kafka_test_table, wait_for

MESSAGES = [
    (b'{"id": 1}', b"alpha", [("source", b"test"), ("ts_received_ns", b"1795000000000000000")]),
    (b'{"id": 2}', b"beta", []),
]


async def _produce(bootstrap: str, topic: str) -> list[RecordMetadata]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        return [await producer.send_and_wait(topic, value, key=key, headers=headers)
                for value, key, headers in MESSAGES]  # fmt: skip
    finally:
        await producer.stop()


def test_virtual_columns_hold_the_brokers_metadata_and_headers(stack: Stack) -> None:
    client = stack.client()
    sink = ("id UInt32, key String, partition UInt64, offset UInt64, ts Nullable(DateTime64(3, 'UTC')), "
            "names Array(String), vals Array(String)")  # fmt: skip
    with kafka_test_table(stack, "virtual", sink=sink, queue="id UInt32") as name:
        client.command(
            f"CREATE MATERIALIZED VIEW k2.{name}_mv TO k2.{name}_sink AS SELECT id, _key AS key, "
            f"_partition AS partition, _offset AS offset, _timestamp_ms AS ts, `_headers.name` AS names, "
            f"`_headers.value` AS vals FROM k2.{name}_queue"
        )
        metadata = asyncio.run(_produce(stack.kafka, f"k2test.{name}"))
        rows = wait_for(lambda: (r := client.query(f"SELECT * FROM k2.{name}_sink ORDER BY id").result_rows)
                        and len(r) == 2 and r, 60, "both messages")  # fmt: skip

    def expected(i: int) -> tuple[object, ...]:
        _, key, headers = MESSAGES[i]
        meta = metadata[i]
        ts = datetime.fromtimestamp(meta.timestamp / 1000, UTC).replace(tzinfo=None)
        return (i + 1, key.decode(), meta.partition, meta.offset, ts, [n for n, _ in headers],
                [v.decode() for _, v in headers])  # fmt: skip

    assert [tuple(r) for r in rows] == [expected(0), expected(1)]
