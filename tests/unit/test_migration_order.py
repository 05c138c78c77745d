"""Migrations are discovered in an order where every object exists before anything that uses it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from k2.errors import MigrationError
from k2.migrations import Migration, default_sql_dir, discover

_CREATES = re.compile(r"CREATE\s+(?:MATERIALIZED\s+)?(?:TABLE|VIEW)\s+IF\s+NOT\s+EXISTS\s+(k2\.\w+)", re.I)
_USES = re.compile(r"(?:FROM|TO|JOIN)\s+(k2\.\w+)", re.I)


def test_every_object_is_created_before_it_is_used() -> None:
    created: list[str] = []
    for migration in discover(default_sql_dir()):
        (name,) = _CREATES.findall(migration.text)
        for used in set(_USES.findall(migration.text)) - {name}:
            assert used in created, f"{migration.name} uses {used} before it exists"
        created.append(name)
    assert len(created) == len(set(created))


def test_consumption_starts_only_once_every_layer_below_the_queues_exists() -> None:
    """A Kafka table streams as soon as a view reads it: silver and gold must be there by then."""
    names = [m.name for m in discover(default_sql_dir())]
    first_queue = min(i for i, n in enumerate(names) if n.endswith("_trades_queue.sql"))
    assert names[first_queue:] == [
        "bronze/binance_trades_queue.sql",
        "bronze/coinbase_trades_queue.sql",
        "bronze/kraken_trades_queue.sql",
        "bronze/binance_trades_queue_errors_mv.sql",
        "bronze/bronze_trades_binance_mv.sql",
        "bronze/bronze_trades_coinbase_mv.sql",
        "bronze/bronze_trades_kraken_mv.sql",
        "bronze/coinbase_trades_queue_errors_mv.sql",
        "bronze/kraken_trades_queue_errors_mv.sql",
    ]
    assert {"silver/silver_trades_binance_mv.sql", "gold/gold_ohlcv_1d_mv.sql"} <= set(names[:first_queue])


def test_file_name_is_the_object_name_and_folder_the_layer() -> None:
    for migration in discover(default_sql_dir()):
        layer, file = migration.name.split("/")
        (name,) = _CREATES.findall(migration.text)
        assert name == f"k2.{Path(file).stem}", migration.name
        assert layer in ("bronze", "silver", "gold")


def test_placeholders_are_filled_and_unknown_ones_refused() -> None:
    queue = next(m for m in discover(default_sql_dir()) if m.name == "bronze/kraken_trades_queue.sql")
    assert "kafka_broker_list = 'redpanda:9092'" in queue.render({"KAFKA_BROKER_LIST": "redpanda:9092"})
    with pytest.raises(
        MigrationError, match=r"bronze/kraken_trades_queue.sql: unknown placeholder \$\{KAFKA_BROKER_LIST\}"
    ):
        queue.render({})
    # a ClickHouse regex with $ is not a placeholder
    assert Migration("x/y.sql", "SELECT match(s, '^a$')").render({}) == "SELECT match(s, '^a$')"
