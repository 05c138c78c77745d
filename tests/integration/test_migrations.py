"""`k2 db migrate` on a fresh and on a migrated database, and its refusal of an edited file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from k2.migrations import default_sql_dir, discover
from tests.support import K2, REPO, Stack, clickhouse_server, stack_env


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
