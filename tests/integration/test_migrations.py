"""`k2 db migrate` on a fresh and on a migrated database, its refusal of an edited file, and
the re-creation of Kafka tables whose address or settings changed."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from k2.migrations import default_sql_dir, discover
from tests.support import K2, REPO, Stack, clickhouse_server, running_stack, stack_env, topic, trade, wait_for


def _migrate(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*K2, "db", "migrate", *extra], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_fresh_then_migrated_then_edited(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    with clickhouse_server(tmp_path / "ch") as url:
        env["K2_CLICKHOUSE_URL"] = url
        names = [m.name for m in discover(default_sql_dir())]

        first = _migrate(env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines() == [f"applied {len(names)} migrations", *(f"  {n}" for n in names)]

        again = _migrate(env)
        assert (again.returncode, again.stdout) == (0, "applied 0 migrations\n")

        edited = tmp_path / "sql"
        shutil.copytree(default_sql_dir(), edited)
        path = edited / "silver" / "silver_trades.sql"
        path.write_text(path.read_text().replace("INTERVAL 30 DAY", "INTERVAL 31 DAY"))
        refused = _migrate(env, "--sql-dir", str(edited))
        assert refused.returncode == 2
        assert "silver/silver_trades.sql was edited after it was applied" in refused.stderr

        added = edited / "gold" / "ohlcv_2m.sql"
        path.write_text((default_sql_dir() / "silver" / "silver_trades.sql").read_text())
        added.write_text("CREATE VIEW IF NOT EXISTS k2.ohlcv_2m AS SELECT 1 AS x\n")
        more = _migrate(env, "--sql-dir", str(edited))
        assert (more.returncode, more.stdout) == (0, "applied 1 migrations\n  gold/ohlcv_2m.sql\n")

        tables = (
            Stack(tmp_path, env, env["K2_KAFKA_BOOTSTRAP"], url)
            .client()
            .query("SELECT name, engine FROM system.tables WHERE database = 'k2' AND name LIKE '%queue'")
            .result_rows
        )
        # the embedded server keeps Kafka tables as Null tables and consumes them itself
        assert sorted(tables) == [(f"{ex}_trades_queue", "Null") for ex in ("binance", "coinbase", "kraken")]


def test_kafka_tables_are_re_pointed_when_the_broker_address_changes(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    with clickhouse_server(tmp_path / "ch") as url:
        env["K2_CLICKHOUSE_URL"] = url
        first = _migrate(env, "--sql-dir", str(default_sql_dir()))
        assert first.returncode == 0, first.stderr

        moved = _migrate({**env, "K2_CLICKHOUSE_KAFKA_BROKERS": "127.0.0.1:29092"})
        again = _migrate({**env, "K2_CLICKHOUSE_KAFKA_BROKERS": "127.0.0.1:29092"})
        comments = dict(
            Stack(tmp_path, env, env["K2_KAFKA_BOOTSTRAP"], url)
            .client()
            .query("SELECT name, comment FROM system.tables WHERE database = 'k2' AND name LIKE '%queue'")
            .result_rows
        )
        views = {
            name: deps
            for name, deps in Stack(tmp_path, env, env["K2_KAFKA_BOOTSTRAP"], url)
            .client()
            .query("SELECT name, dependencies_table FROM system.tables WHERE database = 'k2' AND name LIKE '%queue'")
            .result_rows
        }

    exchanges = ("binance", "coinbase", "kraken")
    repointed = [f"bronze/{ex}_trades_queue.sql" for ex in exchanges] + [
        f"bronze/{name}.sql" for ex in exchanges for name in (f"{ex}_trades_queue_errors_mv", f"bronze_trades_{ex}_mv")
    ]
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines()[0] == f"applied {len(repointed)} migrations"
    assert sorted(line.strip() for line in moved.stdout.splitlines()[1:]) == sorted(repointed)
    assert (again.returncode, again.stdout) == (0, "applied 0 migrations\n")
    for ex in exchanges:
        assert '"broker_list": "127.0.0.1:29092"' in comments[f"{ex}_trades_queue"]
        assert sorted(views[f"{ex}_trades_queue"]) == sorted([f"{ex}_trades_queue_errors_mv", f"bronze_trades_{ex}_mv"])


def test_an_edited_kafka_table_file_re_creates_the_table_with_its_new_settings(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    sql = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), sql)
    queue = sql / "bronze" / "kraken_trades_queue.sql"
    text = queue.read_text()
    assert "kafka_flush_interval_ms = 250" in text
    with clickhouse_server(tmp_path / "ch") as url:
        env["K2_CLICKHOUSE_URL"] = url
        first = _migrate(env, "--sql-dir", str(sql))
        assert first.returncode == 0, first.stderr

        queue.write_text(text.replace("kafka_flush_interval_ms = 250", "kafka_flush_interval_ms = 750"))
        edited = _migrate(env, "--sql-dir", str(sql))
        again = _migrate(env, "--sql-dir", str(sql))
        client = Stack(tmp_path, env, env["K2_KAFKA_BOOTSTRAP"], url).client()
        comments = dict(
            client.query("SELECT name, comment FROM system.tables WHERE database = 'k2' AND name LIKE '%queue'")
            .result_rows
        )
        ((deps,),) = client.query("SELECT dependencies_table FROM system.tables WHERE database = 'k2' "
                                  "AND name = 'kraken_trades_queue'").result_rows  # fmt: skip

    assert edited.returncode == 0, edited.stderr
    assert edited.stdout.splitlines() == [
        "applied 3 migrations",
        "  bronze/kraken_trades_queue.sql",
        "  bronze/bronze_trades_kraken_mv.sql",
        "  bronze/kraken_trades_queue_errors_mv.sql",
    ]
    assert (again.returncode, again.stdout) == (0, "applied 0 migrations\n")
    assert '"flush_interval_ms": 750' in comments["kraken_trades_queue"]
    assert '"flush_interval_ms": 250' in comments["binance_trades_queue"]
    assert sorted(deps) == ["bronze_trades_kraken_mv", "kraken_trades_queue_errors_mv"]


def test_a_data_dir_started_again_on_another_broker_port_keeps_ingesting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    now = time.time_ns()
    with running_stack(data) as before:
        before.produce([(topic("binance"), trade("binance", "MOVE-USDT", 1, "10.5", "1", "buy", now))])
        wait_for(lambda: _ids(before) == [1], 60, "the first trade in silver")
    with running_stack(data) as after:  # the same data dir; every port, the broker's included, is new
        assert after.kafka != before.kafka
        after.produce([(topic("binance"), trade("binance", "MOVE-USDT", 2, "10.5", "1", "buy", now + 1))])
        wait_for(lambda: _ids(after) == [1, 2], 60, "the second trade in silver, through the moved broker")


def _ids(stack: Stack) -> list[int]:
    rows = stack.client().query(
        "SELECT trade_id_num FROM k2.silver_trades FINAL WHERE canonical_symbol = 'MOVE-USDT' ORDER BY trade_id_num"
    ).result_rows
    return [int(r[0]) for r in rows]
