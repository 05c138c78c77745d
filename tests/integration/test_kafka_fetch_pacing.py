"""While an insert runs, a Kafka table's consumer fetches at most once per 50 ms, however often messages arrive.

Messages arrive every 10 ms; every insert takes at least 250 ms (the view sleeps once per block). Fetching
back to back, the consumer would make a fetch for about every message that arrived during each insert.
Paced, it makes at most one per 50 ms, plus one after each insert. Every message still lands, once, in
order.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer

from tests.support import Stack, kafka_table_metric, kafka_test_table, wait_for

N = 300
EVERY_S = 0.01
INSERT_S = 0.25


async def _produce_steadily(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    try:
        start = time.monotonic()
        for i in range(N):
            # a steady stream, one message per EVERY_S: the pace is the input under test, not a wait
            await asyncio.sleep(max(0.0, start + i * EVERY_S - time.monotonic()))
            await producer.send(topic, b'{"id": %d}' % i)
        await producer.flush()
    finally:
        await producer.stop()


def test_fetches_are_paced_while_an_insert_runs(stack: Stack) -> None:
    client = stack.client()
    with kafka_test_table(
        stack, "pacing", sink="id UInt32, offset UInt64, inserted DateTime64(6) DEFAULT now64(6)", queue="id UInt32",
        settings=", kafka_flush_interval_ms = 100",
    ) as name:  # fmt: skip
        client.command(
            f"CREATE MATERIALIZED VIEW k2.{name}_mv TO k2.{name}_sink AS SELECT id, _offset AS offset "
            f"FROM k2.{name}_queue WHERE sleep({INSERT_S}) = 0"  # sleep() runs once per block
        )
        started = time.monotonic()
        asyncio.run(_produce_steadily(stack.kafka, f"k2test.{name}"))
        wait_for(lambda: client.command(f"SELECT count() FROM k2.{name}_sink") >= N, 60, "every message")
        elapsed = time.monotonic() - started
        fetches = kafka_table_metric(stack, "k2_clickhouse_kafka_fetches_total", name)
        inserts = int(client.command(f"SELECT uniqExact(inserted) FROM k2.{name}_sink"))  # one value per block

        rows = client.query(f"SELECT id, offset FROM k2.{name}_sink ORDER BY id").result_rows
        assert rows == [(i, i) for i in range(N)]
        # Paced: at most one fetch per 50 ms (fetches made while idle wait for data, so they come no faster),
        # plus the one that follows each insert; twice that for slack.
        # Measured: 70 fetches paced in 3.5 s; back to back, 272 in 3.6 s.
        bound = elapsed / 0.05 + 2 * inserts + 10
        assert fetches <= bound, f"{fetches:.0f} fetches in {elapsed:.1f}s for {inserts} inserts (bound {bound:.0f})"
        # and the stream was not all fetched in one go: blocks formed while inserts ran
        assert inserts >= 3, f"only {inserts} blocks"
