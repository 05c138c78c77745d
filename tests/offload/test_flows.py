"""The Prefect deployments on a real local Prefect server: registered by `k2 up`, triggered through the API
(as the UI's "Run" button does), completed, and their rows in the cold tier."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from k2.settings import load_settings
from offload.state import StateStore
from tests.offload.helpers import cold_candles, cold_silver, hot_candles, hot_silver, minutes_ago_ns, publish_trades
from tests.support import Stack, http_ok, running_stack, wait_for

# What Prefect's own client retries (prefect.client.base, PREFECT_CLIENT_MAX_RETRIES = 5). The server answers
# 503 when its SQLite database was busy ("database is locked"): the request's transaction was rolled back and
# the server asks the client to send it again. A client that does not is not a Prefect client.
_RETRY_CODES = frozenset({429, 502, 503})
_MAX_RETRIES = 5


def _call(request: urllib.request.Request | str) -> Any:
    attempt = 0
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code not in _RETRY_CODES or attempt == _MAX_RETRIES:
                raise
        time.sleep(min(10.0, 0.5 * 2**attempt))  # backoff before the retry, as Prefect's client does
        attempt += 1


def _api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return _call(urllib.request.Request(
        f"{base}/api{path}", data=json.dumps(body or {}).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    ))  # fmt: skip


def _get(url: str) -> Any:
    return _call(url)


@pytest.fixture(scope="module")
def flows_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with Prefect, shared by this module's tests (Prefect takes ~20 s to start). No safety buffer:
    a run takes rows inserted up to the moment it starts; the serve process looks for triggered runs every
    second instead of every 10 s."""
    with running_stack(tmp_path_factory.mktemp("k2flows") / "data", "--feeds", "none", "--flows",
                       K2_OFFLOAD_SAFETY_BUFFER_S="0", PREFECT_RUNNER_POLL_FREQUENCY="1") as stack:  # fmt: skip
        yield stack


@pytest.mark.integration
def test_an_offload_triggered_from_prefect_completes_and_lands_in_cold(flows_stack: Stack) -> None:
    stack = flows_stack
    state = json.loads((stack.data_dir / "state.json").read_text())
    prefect = state["endpoints"]["prefect"]
    status = json.loads(stack.k2("status", "--json").stdout)
    assert status["endpoints"]["prefect"] == prefect
    assert status["components"]["prefect"]["health"] == "healthy"

    wait_for(lambda: len(_api(prefect, "/deployments/filter")) >= 2, 60, "both deployments")
    deployments = {d["name"]: d for d in _api(prefect, "/deployments/filter")}
    offload = deployments["iceberg-offload-15min"]
    assert [s["schedule"]["cron"] for s in offload["schedules"]] == ["*/15 * * * *"]
    maintenance = deployments["iceberg-maintenance-daily"]
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in maintenance["schedules"]] == [
        ("0 2 * * *", "UTC")
    ]
    assert offload["global_concurrency_limit"]["limit"] == 1

    publish_trades(stack, "PFA-USDT", 1, 7, minutes_ago_ns(20))
    settings = load_settings(stack.env)
    # the bronze tables run as parallel tasks: on a fresh catalog they once raced to create its tables
    tables = ["bronze_trades_binance", "bronze_trades_kraken", "bronze_trades_coinbase", "silver_trades"]
    run = _api(prefect, f"/deployments/{offload['id']}/create_flow_run",
               {"parameters": {"tables": tables, "engine": "pyiceberg", "dry_run": False}})  # fmt: skip

    assert _finish(prefect, run["id"]) == "COMPLETED"
    attempts = _task_attempts(prefect, run["id"], len(tables))
    assert attempts == {f"offload-{t}": 1 for t in tables}, "a task failed and was retried"
    assert cold_silver(settings, "PFA-%") == hot_silver(stack, "PFA-%")
    assert sorted(int(r[2]) for r in cold_silver(settings, "PFA-%")) == list(range(1, 8))

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{settings.flows_metrics_port}/metrics").read().decode()
    assert 'k2_offload_rows_total{table="silver_trades"} 7.0' in metrics
    assert http_ok(prefect + "/api/health")

    # the daily maintenance, run now from the UI: compaction and the audit of the trades' day
    day = dt.datetime.fromtimestamp(minutes_ago_ns(20) / 1e9, dt.UTC).date().isoformat()
    run = _api(prefect, f"/deployments/{maintenance['id']}/create_flow_run",
               {"parameters": {"tables": ["silver_trades"], "actions": ["compact", "audit"], "day": day}})  # fmt: skip
    assert _finish(prefect, run["id"]) == "COMPLETED"
    audit = StateStore(settings.state_url).latest_audit()
    assert [(a.table_name, a.audit_day, a.clickhouse_rows, a.iceberg_rows, a.status) for a in audit] == [
        ("silver_trades", day, 7, 7, "ok")
    ]
    assert audit[0].clickhouse_quantity == audit[0].iceberg_quantity == "0.00000028"  # 1+2+...+7 e-8

    # a table never offloaded cannot be compacted: the run fails, as the alert on it expects
    run = _api(prefect, f"/deployments/{maintenance['id']}/create_flow_run",
               {"parameters": {"tables": ["gold_ohlcv_1h"], "actions": ["compact"]}})  # fmt: skip
    assert _finish(prefect, run["id"]) == "FAILED"


@pytest.mark.integration
def test_prefect_server_killed_mid_run_then_restarted_leaves_cold_with_each_trade_once(flows_stack: Stack) -> None:
    """SIGKILL to the Prefect server while an offload flow run is running; the `k2 up` supervisor restarts it.
    The run goes on in its own process and reports its end once the server is back; the serve process takes
    the next triggered run from the restarted server; cold then holds every trade exactly once."""
    stack = flows_stack
    prefect = json.loads((stack.data_dir / "state.json").read_text())["endpoints"]["prefect"]
    settings = load_settings(stack.env)
    offload = wait_for(lambda: {d["name"]: d for d in _api(prefect, "/deployments/filter")}.get("iceberg-offload-15min"),
                       60, "the offload deployment")  # fmt: skip
    tables = ["bronze_trades_binance", "silver_trades", "gold_ohlcv_1m", "gold_ohlcv_5m"]
    parameters = {"tables": tables, "engine": "pyiceberg", "dry_run": False}

    publish_trades(stack, "PFK-USDT", 1, 40, minutes_ago_ns(25))
    first = _api(prefect, f"/deployments/{offload['id']}/create_flow_run", {"parameters": parameters})
    wait_for(lambda: _get(f"{prefect}/api/flow_runs/{first['id']}")["state"]["type"] == "RUNNING", 60, "run started")
    victim = stack.pid("prefect")
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    publish_trades(stack, "PFK-USDT", 41, 20, minutes_ago_ns(15))  # trades go on arriving meanwhile
    wait_for(lambda: stack.pid("prefect") != victim and http_ok(f"{prefect}/api/health"), 120, "Prefect back")
    back_s = time.monotonic() - killed_at
    first_state = _finish(prefect, first["id"])
    first_end_s = time.monotonic() - killed_at

    # a 503 for a moment after the restart is retried by _call, as by Prefect's client (and the UI's user)
    second = _api(prefect, f"/deployments/{offload['id']}/create_flow_run", {"parameters": parameters})
    second_state = _finish(prefect, second["id"])
    recovered_s = time.monotonic() - killed_at
    cold = cold_silver(settings, "PFK-%")
    ids = sorted(int(r[2]) for r in cold)
    sent = list(range(1, 61))
    print(f"Prefect server SIGKILL mid-run: server back after {back_s:.1f}s; the killed-over run ended "
          f"{first_state} at {first_end_s:.1f}s; the next run {second_state} at "
          f"{recovered_s:.1f}s; "
          f"sent={len(sent)} stored={len(ids)} lost={len(set(sent) - set(ids))} duplicated={len(ids) - len(set(ids))}")  # fmt: skip

    assert first_state in ("COMPLETED", "FAILED", "CRASHED"), "the run left in flight must end, one way or another"
    assert second_state == "COMPLETED"
    assert ids == sent
    assert cold == hot_silver(stack, "PFK-%")
    for interval in ("1m", "5m"):
        assert cold_candles(settings, interval, "PFK-%") == hot_candles(stack, interval, "PFK-%"), interval


def _task_attempts(prefect: str, run_id: str, count: int) -> dict[str, int]:
    """Task run name -> attempts, once ``count`` task runs of the flow run are completed (task run states
    reach the server as events, a little after the flow run's own state)."""

    def completed() -> dict[str, int] | None:
        runs = _api(prefect, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        done = {r["name"]: r["run_count"] for r in runs if r["state_type"] == "COMPLETED"}
        return done if len(done) >= count else None

    result = wait_for(completed, 30, f"{count} completed task runs")
    assert result is not None
    return result


def _finish(prefect: str, run_id: str) -> str:
    def final_state() -> str | None:
        kind = _get(f"{prefect}/api/flow_runs/{run_id}")["state"]["type"]
        return kind if kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    result = wait_for(final_state, 120, "the triggered flow run to finish")
    assert isinstance(result, str)
    return result
