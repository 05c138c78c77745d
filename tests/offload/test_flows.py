"""The Prefect deployments on a real local Prefect server: registered by `k2 up`, triggered through the API
(as the UI's "Run" button does), completed, and their rows in the cold tier."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from k2.settings import load_settings
from offload.state import StateStore
from tests.offload.helpers import cold_silver, hot_silver, minutes_ago_ns, publish_trades
from tests.support import http_ok, running_stack, wait_for


def _api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{base}/api{path}", data=json.dumps(body or {}).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.integration
def test_an_offload_triggered_from_prefect_completes_and_lands_in_cold(tmp_path: Path) -> None:
    # no safety buffer: the run takes rows inserted up to the moment it starts
    with running_stack(tmp_path / "data", "--feeds", "none", "--flows", K2_OFFLOAD_SAFETY_BUFFER_S="0") as stack:
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
        run = _api(prefect, f"/deployments/{offload['id']}/create_flow_run",
                   {"parameters": {"tables": ["silver_trades"], "engine": "pyiceberg", "dry_run": False}})  # fmt: skip

        assert _finish(prefect, run["id"]) == "COMPLETED"
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


def _finish(prefect: str, run_id: str) -> str:
    def final_state() -> str | None:
        kind = _get(f"{prefect}/api/flow_runs/{run_id}")["state"]["type"]
        return kind if kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    result = wait_for(final_state, 120, "the triggered flow run to finish")
    assert isinstance(result, str)
    return result
