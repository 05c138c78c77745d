"""The k2 command line against the running embedded stack, and its refusals."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path

from tests.support import K2, REPO, Stack, stack_env


def test_status_json_reports_components_and_endpoints(stack: Stack) -> None:
    report = json.loads(stack.k2("status", "--json").stdout)
    assert report["running"] is True
    metrics = f"http://127.0.0.1:{stack.env['K2_EXPORTER_PORT']}/metrics"
    assert report["endpoints"] == {"kafka": stack.kafka, "clickhouse": stack.clickhouse_url, "metrics": metrics}
    assert {name: c["health"] for name, c in report["components"].items()} == {
        "broker": "healthy",
        "clickhouse": "healthy",
        "exporter": "healthy",
    }
    assert report["components"]["clickhouse"]["pid"] == stack.pid("clickhouse")
    with urllib.request.urlopen(metrics, timeout=30) as response:
        assert "k2_clickhouse_up 1.0" in response.read().decode().splitlines()


def test_sql_prints_what_clickhouse_returns_and_honours_format(stack: Stack) -> None:
    assert stack.k2("sql", "SELECT 1 AS one, 'x' AS s").stdout == "1\tx\n"
    assert stack.k2("sql", "SELECT 1 AS one FORMAT JSONEachRow").stdout == '{"one":1}\n'
    assert stack.k2("sql", "SELECT 2 AS two", "--format", "CSVWithNames").stdout == '"two"\n2\n'
    failed = stack.k2("sql", "SELECT * FROM k2.nope", check=False)
    assert failed.returncode == 2
    assert "UNKNOWN_TABLE" in failed.stderr


def test_db_migrate_is_a_no_op_on_a_migrated_database(stack: Stack) -> None:
    assert stack.k2("db", "migrate").stdout.strip() == "applied 0 migrations"


def test_up_twice_is_refused(stack: Stack) -> None:
    result = stack.k2("up", "--detach", check=False)
    assert result.returncode == 2
    supervisor = json.loads(stack.k2("status", "--json").stdout)["supervisor_pid"]
    assert f"k2 is already running (pid {supervisor}, data dir {stack.data_dir}); run `k2 down` first" in result.stderr


def test_stale_pid_file_is_removed_and_a_taken_port_named(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    run = tmp_path / "data" / "run"
    run.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / "k2.pid").write_text(str(dead.pid))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["K2_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
        result = subprocess.run([*K2, "up"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2
    assert f"removing stale pid file {run / 'k2.pid'} (process {dead.pid} is gone)" in result.stderr
    assert f"port {port} on 127.0.0.1 is already in use, so the broker cannot start" in result.stderr
    assert not (run / "k2.pid").exists()
    assert not (tmp_path / "data" / "logs").exists()  # refused before starting anything


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    env["K2_CLICKHOUSE_ULR"] = "http://127.0.0.1:1"
    result = subprocess.run([*K2, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown environment variable K2_CLICKHOUSE_ULR" in result.stderr
