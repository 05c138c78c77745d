"""Queries take values as bound parameters (``{name:Type}`` + ``parameters=``), never spliced into the SQL.

Every value spliced into SQL text in k2/, offload/, flows/ and feed_handlers/ must be on the allow-list
below with the reason it cannot be a bound value: identifiers (ClickHouse binds values, and identifiers
only as ``{name:Identifier}`` one part at a time), fragments that themselves hold only placeholders, and
the embedded endpoint rewriting the statement its own client sent. A new splice fails until it is bound or
reviewed and listed here; an entry that no longer matches fails too, so the list stays true.
"""

from __future__ import annotations

import pytest

from k2.errors import MigrationError
from k2.migrations import Migration
from tests.security.sql_scan import scan_source, scan_tree
from tests.support import REPO

PACKAGES = ("k2", "offload", "flows", "feed_handlers")

REGISTRY = "table or column name from the TableSpec registry (offload/tables.py), not from input"
OWN_SCHEMA = "column list from ClickHouse's DESCRIBE of K2's own table, each name backquoted (offload/schema.py)"
PLACEHOLDERS = "a fragment of this function holding only {name:Type} placeholders, bound through parameters="
CONSTANT = "a module constant"
CLIENT_STATEMENT = "the embedded endpoint rewriting the statement its HTTP client sent (the client's own SQL)"
PARSED_DDL = "taken from a CREATE TABLE ... ENGINE = Kafka the embedded endpoint parsed, identifiers backquoted"
MIGRATION_NAME = "an object name matched (\\w and dots only) in K2's own clickhouse/*.sql migration files"

ALLOWED: dict[tuple[str, str, str], str] = {
    # -- migrations: re-pointing a Kafka table drops it and the views reading it ----------------------------
    ("k2/migrations.py", "migrate", "queue"): MIGRATION_NAME,
    ("k2/migrations.py", "migrate", "_view_name(reader)"): MIGRATION_NAME,
    # -- offload: ClickHouse reads -----------------------------------------------------------------------
    ("offload/plan.py", "_sql", "spec.source"): REGISTRY,
    ("offload/plan.py", "_sql", "spec.ingest_column"): REGISTRY,
    ("offload/plan.py", "_sql", "', '.join(spec.key)"): REGISTRY,
    ("offload/plan.py", "_sql", "shape.select_sql"): OWN_SCHEMA,
    ("offload/plan.py", "_sql", "window"): PLACEHOLDERS + " ({lo:Int64}, {hi:Int64}; the column from the registry)",
    ("offload/plan.py", "_sql", "closes"): PLACEHOLDERS + " ({n:UInt32})",
    ("offload/plan.py", "_sql", "touched"): PLACEHOLDERS + " ({n:UInt32}, and the window)",
    ("offload/audit.py", "_clickhouse_sql", "spec.source"): REGISTRY,
    ("offload/audit.py", "_clickhouse_sql", "spec.ingest_column"): REGISTRY,
    ("offload/audit.py", "_clickhouse_sql", "spec.event_column"): REGISTRY,
    ("offload/audit.py", "_clickhouse_sql", "', '.join(spec.key)"): REGISTRY,
    ("offload/audit.py", "_clickhouse_sql", "q"): REGISTRY + " (quantity_column, or the literal 0)",
    ("offload/audit.py", "_clickhouse_sql", "day"): PLACEHOLDERS + " ({lo:Int64}, {hi:Int64})",
    ("offload/audit.py", "_clickhouse_sql", "_WM"): PLACEHOLDERS + " ({wm:Int64}, a module constant)",
    # -- offload: cold tables in ClickHouse (values bound; the engine clause is a template of this module) ---
    ("offload/coldsql.py", "expose_cold_table", "clause"): (
        "table_engine's template: {path|url|key|secret:String} placeholders, and a named collection checked to be "
        "a bare name (an identifier a parameter cannot stand for)"
    ),
    # -- offload: Spark SQL: identifiers of a MERGE, and an Iceberg procedure's arguments from typed values ---
    ("offload/engines/spark_engine.py", "SparkEngine.commit", "target"): "catalog identifier of a registry table, backquoted",
    ("offload/engines/spark_engine.py", "SparkEngine.commit", "view"): "temporary view name made of a uuid4 hex",
    ("offload/engines/spark_engine.py", "SparkEngine.commit", "on"): REGISTRY + ", backquoted key columns",
    ("offload/engines/spark_engine.py", "SparkEngine.expire", "CATALOG_NAME"): CONSTANT + " (offload/catalog.py)",
    ("offload/engines/spark_engine.py", "SparkEngine.expire", "_quoted(table_id)"): (
        REGISTRY + "; _quoted refuses a quote"
    ),
    ("offload/engines/spark_engine.py", "SparkEngine.expire", "_utc(older_than)"): "a datetime formatted by strftime",
    ("offload/engines/spark_engine.py", "SparkEngine.expire", "int(retain_last)"): "an int",
    # -- the embedded ClickHouse endpoint ------------------------------------------------------------------
    ("k2/embedded/chdb_engine.py", "ChdbEngine.execute", "database"): (
        "the `database` URL parameter, refused unless it matches \\w+ (the line above), backquoted"
    ),
    ("k2/embedded/chdb_engine.py", "ChdbEngine._set", "', '.join((f'{k} = {_setting_literal(v)}' for k, v in settings.items()))"): (
        "SET takes no parameters: names match _SETTING_NAME and exist in system.settings, values are quoted "
        "by _setting_literal"
    ),
    ("k2/embedded/http_server.py", "ClickHouseHTTPServer._insert_body", "head"): CLIENT_STATEMENT,
    ("k2/embedded/http_server.py", "ClickHouseHTTPServer._insert_body", "name"): "a path from tempfile.mkstemp",
    ("k2/embedded/http_server.py", "ClickHouseHTTPServer._insert_body", "fmt"): "a format name matched by \\w+",
    ("k2/embedded/kafka_ddl.py", "rewrite_create_kafka", "head.group('ine') or ''"): CLIENT_STATEMENT,
    ("k2/embedded/kafka_ddl.py", "rewrite_create_kafka", "database"): PARSED_DDL,
    ("k2/embedded/kafka_ddl.py", "rewrite_create_kafka", "table"): PARSED_DDL,
    ("k2/embedded/kafka_ddl.py", "rewrite_create_kafka", "columns"): CLIENT_STATEMENT + " (its column list)",
    ("k2/embedded/kafka_ddl.py", "rewrite_create_kafka", "virtual"): CONSTANT + " (VIRTUAL_COLUMNS)",
    ("k2/embedded/kafka_ddl.py", "rewrite_create_kafka", "comment"): "the table's spec as JSON, quotes escaped",
    ("k2/embedded/kafka_engine.py", "_statements", "spec.qualified_name"): PARSED_DDL,
    ("k2/embedded/kafka_engine.py", "_statements", "names"): PARSED_DDL,
    ("k2/embedded/kafka_engine.py", "_statements", "tuple_type"): PARSED_DDL,
    ("k2/embedded/kafka_engine.py", "_statements", "virtual"): CONSTANT + " (VIRTUAL_COLUMNS), backquoted",
    ("k2/embedded/kafka_engine.py", "_statements", "extracted"): "tupleElement(j, <int>) per column",
    ("k2/embedded/kafka_engine.py", "_statements", "source"): "a constant subquery of this function",
    ("k2/embedded/kafka_engine.py", "_statements", "where"): "one of two constants",
    ("k2/gold_repair.py", "repair_gold", "where"): "built by _suspects of {name:Type} placeholders: every value is a parameter",
    ("k2/gold_repair.py", "repair_gold", "table"): "k2.gold_ohlcv_<level>, the level a GOLD_LEVELS key",
    ("k2/gold_repair.py", "repair_gold", "bucket"): "toStartOfInterval over a GOLD_LEVELS interval constant",
    ("k2/gold_repair.py", "repair_gold", "touched"): "a subquery of this function's `where` and `bucket`",
}  # fmt: skip


def test_no_value_is_spliced_into_sql_unless_reviewed() -> None:
    found = list(scan_tree(REPO, PACKAGES))
    unreviewed = [f"{s.path}:{s.line} in {s.function}: {s.expression}" for s in found if s.key not in ALLOWED]
    assert unreviewed == [], "bind these as {name:Type} parameters, or review them into ALLOWED"
    stale = sorted(set(ALLOWED) - {s.key for s in found})
    assert stale == [], "ALLOWED names splices that are gone: remove them"


def test_scanner_finds_sql_built_from_input() -> None:
    source = """
QUERY = "SELECT * FROM k2.silver_trades WHERE symbol = '{}'"
LIMIT = 10

def by_symbol(client, symbol):
    client.query(f"SELECT * FROM k2.silver_trades WHERE symbol = '{symbol}' LIMIT {LIMIT}")
    client.query(QUERY.format(symbol))
    client.query("SELECT * FROM k2.silver_trades WHERE symbol = " + symbol)
    client.query("DROP TABLE %s" % symbol)

def bound(client, symbol):
    client.query("SELECT * FROM k2.silver_trades WHERE symbol = {s:String}", parameters={"s": symbol})
    print(f"SELECT done for {symbol}")
    raise ValueError(f"no CREATE TABLE for {symbol}")
"""
    found = [(s.function, s.expression, s.line) for s in scan_source(source, "example.py")]
    assert found == [("by_symbol", "symbol", 6), ("by_symbol", "symbol", 7), ("by_symbol", "symbol", 8),
                     ("by_symbol", "symbol", 9)]  # fmt: skip


def test_migration_placeholders_cannot_leave_their_string_literal() -> None:
    """`${KAFKA_BROKER_LIST}` is text spliced into a quoted Kafka engine setting at `k2 db migrate` (from
    K2_CLICKHOUSE_KAFKA_BROKERS): a value that would close the literal and add SQL is refused."""
    queue = Migration("bronze/x_queue.sql", "ENGINE = Kafka SETTINGS kafka_broker_list = '${KAFKA_BROKER_LIST}'")
    assert queue.render({"KAFKA_BROKER_LIST": "redpanda:9092,redpanda-2:9092"}).endswith(
        "'redpanda:9092,redpanda-2:9092'"
    )
    for value in ("b:9092', kafka_topic_list = 'other", "b:9092\\", "b:9092\nDROP TABLE k2.silver_trades"):
        with pytest.raises(MigrationError, match="may not hold a quote"):
            queue.render({"KAFKA_BROKER_LIST": value})
