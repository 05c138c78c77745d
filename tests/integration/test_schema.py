"""What the DDL promises, read back from the running embedded stack: silver's columns and types, each
layer's TTL, bronze's Kafka lineage against the broker's own metadata, the topics' partitions."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from feed_handlers.instruments import topic_names
from tests.support import Stack, topic, trade, wait_for

SILVER = [
    ("exchange", "LowCardinality(String)"),
    ("symbol", "LowCardinality(String)"),
    ("canonical_symbol", "LowCardinality(String)"),
    ("trade_id", "String"),
    ("trade_id_num", "UInt64"),
    ("price", "Decimal(38, 18)"),
    ("quantity", "Decimal(38, 18)"),
    ("quote_volume", "Decimal(38, 18)"),
    ("side", "LowCardinality(String)"),
    ("ts_event", "DateTime64(9, 'UTC')"),
    ("ts_received", "DateTime64(9, 'UTC')"),
    ("ts_ingested", "DateTime64(6, 'UTC')"),
    ("is_valid", "Bool"),
    ("validation_errors", "Array(String)"),
    ("vendor", "Map(String, String)"),
    ("source_topic", "LowCardinality(String)"),
    ("source_partition", "UInt32"),
    ("source_offset", "UInt64"),
]


def test_silver_columns_and_types(stack: Stack) -> None:
    rows = stack.client().query(
        "SELECT name, type FROM system.columns WHERE database = 'k2' AND table = 'silver_trades' ORDER BY position"
    ).result_rows
    assert [tuple(r) for r in rows] == SILVER


def test_each_layer_keeps_its_rows_as_long_as_it_says(stack: Stack) -> None:
    ddl = dict(stack.client().query(
        "SELECT name, create_table_query FROM system.tables WHERE database = 'k2' AND "
        "(name LIKE 'bronze_trades_%' OR name IN ('silver_trades', 'ingest_errors')) AND engine LIKE '%MergeTree'"
    ).result_rows)  # fmt: skip
    ttl = {name: query[query.index(" TTL ") + 5 :].split(" SETTINGS ")[0] for name, query in ddl.items()}
    assert ttl == {
        **{f"bronze_trades_{ex}": "toDateTime(ingested_at) + toIntervalDay(7)" for ex in ("binance", "kraken", "coinbase")},
        "silver_trades": "toDateTime(ts_event) + toIntervalDay(30)",
        "ingest_errors": "toDateTime(ingested_at) + toIntervalDay(30)",
    }


def test_bronze_lineage_is_the_brokers_own(stack: Stack) -> None:
    record = trade("kraken", "LINEAGE-USD", 77, "1.5", "2", "buy", time.time_ns())

    async def publish() -> RecordMetadata:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all")
        await producer.start()
        try:
            return await producer.send_and_wait(topic("kraken"), orjson.dumps(record), key=b"LINEAGE")
        finally:
            await producer.stop()

    before = datetime.now(UTC).replace(tzinfo=None)  # clickhouse-connect reads UTC columns as naive UTC
    meta = asyncio.run(publish())
    query = ("SELECT _topic, _partition, _offset, _timestamp, ingested_at FROM k2.bronze_trades_kraken "
             "WHERE canonical_symbol = 'LINEAGE-USD'")  # fmt: skip
    rows = wait_for(lambda: stack.client().query(query).result_rows, 60, "the record in bronze")
    ((topic_name, partition, offset, timestamp, ingested_at),) = rows
    assert (topic_name, partition, offset) == (meta.topic, meta.partition, meta.offset)
    broker_time = datetime.fromtimestamp(meta.timestamp / 1000, UTC).replace(tzinfo=None)
    assert timestamp == broker_time  # the broker's, to the millisecond
    assert before <= ingested_at <= datetime.now(UTC).replace(tzinfo=None)


def test_topics_have_the_partitions_instruments_yaml_asks_for(stack: Stack) -> None:
    async def partitions() -> dict[str, int]:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
        await producer.start()
        try:
            return {name: len(await producer.partitions_for(name))
                    for ex in ("binance", "kraken", "coinbase") for name in topic_names(ex)}  # fmt: skip
        finally:
            await producer.stop()

    wanted = {"binance": 4, "kraken": 2, "coinbase": 2}  # tests/support.py TEST_INSTRUMENTS
    assert asyncio.run(partitions()) == {
        name: (1 if name.endswith(".dlq") else wanted[ex]) for ex in wanted for name in topic_names(ex)
    }
