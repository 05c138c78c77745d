"""Kafka CREATE TABLE statements become Null tables plus consumer specs, as the embedded server needs."""

from __future__ import annotations

import pytest

from k2.embedded.kafka_ddl import KafkaTableSpec, rewrite_create_kafka, spec_from_comment, strip_comments
from k2.errors import ClickHouseError
from k2.migrations import default_sql_dir


def test_the_shipped_queue_ddl_rewrites_to_a_null_table_with_virtual_columns() -> None:
    sql = (default_sql_dir() / "bronze" / "coinbase_trades_queue.sql").read_text()
    sql = sql.replace("${KAFKA_BROKER_LIST}", "127.0.0.1:9092")
    rewritten = rewrite_create_kafka(sql)
    assert rewritten is not None
    ddl, spec = rewritten
    assert spec == KafkaTableSpec(
        database="k2",
        table="coinbase_trades_queue",
        broker_list="127.0.0.1:9092",
        topics=("market.crypto.trades.coinbase",),
        group_name="k2-clickhouse-coinbase",
        format="JSONEachRow",
        handle_error_mode="stream",
        num_consumers=1,
        max_block_size=262144,
        flush_interval_ms=250,
    )
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS `k2`.`coinbase_trades_queue`\n(\n    exchange String,")
    for column in ("_topic LowCardinality(String)", "_offset UInt64", "_raw_message String", "_error String"):
        assert column in ddl
    assert "ENGINE = Null\nCOMMENT 'k2-embedded-kafka:" in ddl
    comment = ddl.split("COMMENT '", 1)[1][:-1].replace("\\'", "'").replace("\\\\", "\\")
    assert spec_from_comment(comment) == spec


def test_positional_engine_arguments_and_default_database() -> None:
    rewritten = rewrite_create_kafka(
        "create table q (a String) engine = Kafka('b:9092', 't1, t2', 'g', 'JSONEachRow') "
        "settings kafka_num_consumers = 2; -- trailing comment",
        current_database="db",
    )
    assert rewritten is not None
    spec = rewritten[1]
    assert (spec.database, spec.table, spec.topics, spec.num_consumers) == ("db", "q", ("t1", "t2"), 2)
    assert spec.handle_error_mode == "default"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("CREATE TABLE q (a String) ENGINE = Kafka SETTINGS kafka_topic_list = 't'", "kafka_broker_list"),
        (
            "CREATE TABLE q (a String) ENGINE = Kafka('b', 't', 'g', 'CSV')",
            "kafka_format 'CSV' is not supported by the embedded server",
        ),
        (
            "CREATE TABLE q (a String) ENGINE = Kafka('b', 't', 'g', 'JSONEachRow') "
            "SETTINGS kafka_handle_error_mode = 'dead_letter'",
            "Unknown kafka_handle_error_mode 'dead_letter'",
        ),
        ("CREATE TABLE q (a String) ENGINE = Kafka('b', 't', 'g', 'JSONEachRow') SETTINGS x", "expected key = value"),
    ],
)
def test_bad_kafka_tables_are_refused_with_clickhouse_like_errors(sql: str, message: str) -> None:
    with pytest.raises(ClickHouseError, match=message):
        rewrite_create_kafka(sql)


def test_other_statements_are_left_alone() -> None:
    assert rewrite_create_kafka("CREATE TABLE t (a String) ENGINE = MergeTree ORDER BY a") is None
    assert rewrite_create_kafka("SELECT 'ENGINE = Kafka'") is None
    assert strip_comments("SELECT '--not' -- yes\n, 1 /* c */") == "SELECT '--not' \n, 1 "
