"""Grafana, offline: dashboards match their generator and the Grafana JSON schema, provisioning files
pass strict schemas, every PromQL expression parses with promtool, and every ClickHouse query runs
against the embedded stack and draws the candles silver's trades make."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.tools import DASHBOARDS, DOCKER, PROVISIONING, run, tool
from tests.support import Stack

SCHEMAS = DOCKER / "grafana" / "schema"
DATASOURCE_UIDS = {"k2-prometheus", "k2-alertmanager", "k2-clickhouse"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboards", DOCKER / "grafana" / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _targets(datasource_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{name}: {panel['title']}", target) for name, d in _dashboards().items() for panel in _panels(d)
            for target in panel["targets"] if target["datasource"]["type"] == datasource_type]  # fmt: skip


def _validator(name: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    rendered = _generator().render()
    assert sorted(rendered) == sorted(p.name for p in DASHBOARDS.glob("*.json"))
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, f"{name} is stale: run docker/grafana/build_dashboards.py"


def test_dashboards_validate_against_the_grafana_schema() -> None:
    validator = _validator("dashboard.schema.json")
    dashboards = _dashboards()
    assert set(dashboards) == {"k2-feeds.json", "k2-pipeline.json", "k2-clickhouse.json", "k2-offload.json",
                               "k2-ohlcv.json"}  # fmt: skip
    for name, dashboard in dashboards.items():
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(dashboard)]
        assert errors == [], name
    # the schema is strict: a misspelt panel key is an error
    broken = copy.deepcopy(dashboards["k2-feeds.json"])
    broken["panels"][1]["fieldconfig"] = broken["panels"][1].pop("fieldConfig")
    assert [e.message for e in validator.iter_errors(broken)]


def test_dashboards_are_consistent() -> None:
    uids = [d["uid"] for d in _dashboards().values()]
    assert len(uids) == len(set(uids))
    for name, dashboard in _dashboards().items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        for panel in _panels(dashboard):
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, (name, panel["title"])
            assert panel["datasource"]["uid"] in DATASOURCE_UIDS, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in DATASOURCE_UIDS
                query = target.get("expr") or target.get("rawSql")
                assert query, (name, panel["title"])
                used = set(re.findall(r"\$\{?(\w+)", query + panel["title"])) - {"__rate_interval", "__timeFilter"}
                assert used <= variables, (name, panel["title"], used - variables)


def test_provisioning_files_pass_strict_schemas() -> None:
    datasources = _validator("provisioning-datasources.schema.json")
    providers = _validator("provisioning-dashboards.schema.json")
    files = sorted(PROVISIONING.rglob("*.y*ml"))
    assert [f.relative_to(PROVISIONING).as_posix() for f in files] == ["dashboards/k2.yml", "datasources/k2.yml"]
    datasource_doc = yaml.safe_load((PROVISIONING / "datasources" / "k2.yml").read_text())
    provider_doc = yaml.safe_load((PROVISIONING / "dashboards" / "k2.yml").read_text())
    assert [e.message for e in datasources.iter_errors(datasource_doc)] == []
    assert [e.message for e in providers.iter_errors(provider_doc)] == []
    assert {d["uid"] for d in datasource_doc["datasources"]} == DATASOURCE_UIDS
    # the provider reads where compose mounts the dashboards
    compose = yaml.safe_load((DOCKER.parent / "docker-compose.v2.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./docker/grafana/dashboards:{provider_doc['providers'][0]['options']['path']}:ro" in mounts
    # what Grafana would ignore silently is an error here
    typo = copy.deepcopy(datasource_doc)
    typo["datasources"][2]["jsonData"]["defaultDatabse"] = typo["datasources"][2]["jsonData"].pop("defaultDatabase")
    typo["datasources"][0]["isdefault"] = True
    typo_errors = sorted(e.message for e in datasources.iter_errors(typo))
    assert len(typo_errors) == 2 and all("not allowed" in e for e in typo_errors), typo_errors
    wrong_user = copy.deepcopy(datasource_doc)
    wrong_user["datasources"][2]["jsonData"]["username"] = "default"
    wrong_user["datasources"][2]["secureJsonData"]["password"] = "hunter2"  # a literal secret
    assert len(list(datasources.iter_errors(wrong_user))) == 2
    provider_typo = copy.deepcopy(provider_doc)
    provider_typo["providers"][0]["options"]["foldersFromFileStructure"] = True
    assert [e.message for e in providers.iter_errors(provider_typo)]


# Grafana's variables, as Grafana itself would expand them for a query
PROMQL_EXPANSIONS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "6h", "$exchange": ".*",
                     "$symbol": ".*", "$table": ".*"}  # fmt: skip


def _promql(expr: str) -> str:
    for variable, value in PROMQL_EXPANSIONS.items():
        expr = expr.replace(variable, value)
    return expr


def test_every_dashboard_promql_expression_parses_with_promtool(tmp_path: Path) -> None:
    exprs = [(where, _promql(t["expr"])) for where, t in _targets("prometheus")]
    for name, dashboard in _dashboards().items():
        for variable in dashboard["templating"]["list"]:
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"])
            if variable.get("datasource", {}).get("type") == "prometheus":
                assert inner is not None, (name, variable["query"])
                exprs.append((f"{name}: ${variable['name']}", _promql(inner.group(1))))
    assert len(exprs) > 40
    assert not [e for _, e in exprs if "$" in e.replace("{{", "")], "unexpanded Grafana variable"
    rules = {"groups": [{"name": "dashboards", "rules": [{"record": f"k2:dashboard_expr_{i}", "expr": e}
                                                          for i, (_, e) in enumerate(exprs)]}]}  # fmt: skip
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(tool("promtool"), "check", "rules", path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    # and promtool would have said so: a broken expression fails the same check
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x", "expr": "rate(k2_x[1m]"}]}]}))
    assert run(tool("promtool"), "check", "rules", path, check=False).returncode != 0


def _clickhouse_sql(sql: str, variables: dict[str, str], start: int, end: int) -> str:
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({start}) AND \1 <= toDateTime({end})", sql)
    for name, value in variables.items():
        sql = sql.replace("${" + name + "}", value)
    assert "$" not in sql, sql
    return sql


@pytest.mark.integration
def test_ohlcv_dashboard_queries_run_on_clickhouse_and_draw_the_candles(stack: Stack) -> None:
    """The OHLCV dashboard's SQL against real k2 tables: a known minute of trades gives the known candle."""
    client = stack.client()
    minute = (int(time.time()) // 60 - 2) * 60  # a closed minute two minutes ago
    trades = [("1", "100.5", "0.5", "50.25"), ("2", "101.25", "0.25", "25.3125"), ("3", "99.75", "1", "99.75"),
              ("4", "100", "0.125", "12.5")]  # fmt: skip
    rows = ", ".join(
        f"('grafana_test', 'GRAFUSD', 'GRAF-USD', '{tid}', {tid}, '{price}', '{qty}', '{quote}', "
        f"'buy', fromUnixTimestamp64Nano({(minute + int(tid)) * 10**9}, 'UTC'), "
        f"fromUnixTimestamp64Nano({(minute + int(tid)) * 10**9}, 'UTC'), now64(6), true, [], map(), 't', 0, {tid})"
        for tid, price, qty, quote in trades
    )
    client.command(
        "INSERT INTO k2.silver_trades (exchange, symbol, canonical_symbol, trade_id, trade_id_num, price, quantity, "
        "quote_volume, side, ts_event, ts_received, ts_ingested, is_valid, validation_errors, vendor, source_topic, "
        "source_partition, source_offset) VALUES " + rows
    )
    dashboard = _dashboards()["k2-ohlcv.json"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    exchanges = [r[0] for r in client.query(variables["exchange"]["query"]).result_rows]
    assert "grafana_test" in exchanges
    symbol_sql = _clickhouse_sql(variables["symbol"]["query"], {"exchange": "grafana_test"}, 0, 0)
    assert [r[0] for r in client.query(symbol_sql).result_rows] == ["GRAF-USD"]

    targets = [t for p in _panels(dashboard) for t in p["targets"]]
    assert len(targets) == 3
    intervals = [o["value"] for o in variables["interval"]["options"]]
    assert intervals == ["1m", "5m", "15m", "30m", "1h", "1d"]
    start, end = minute - 86_400, minute + 3_600
    for interval in intervals:
        values = {"exchange": "grafana_test", "symbol": "GRAF-USD", "interval": interval}
        for target in targets:
            result = client.query(_clickhouse_sql(target["rawSql"], values, start, end))
            assert len(result.result_rows) == 1, (interval, target["refId"], result.result_rows)
        candle = client.query(_clickhouse_sql(targets[0]["rawSql"], values, start, end))
        assert candle.column_names == ("time", "open", "high", "low", "close", "volume")
        assert candle.result_rows[0][1:] == (100.5, 101.25, 99.75, 100.0, 1.875), interval
    one_minute = {"exchange": "grafana_test", "symbol": "GRAF-USD", "interval": "1m"}
    latest = client.query(_clickhouse_sql(targets[2]["rawSql"], one_minute, start, end))
    assert latest.result_rows[0][7] == 4  # trade_count, from the exact (decimal) table
    assert str(latest.result_rows[0][5]) == "1.875000000000000000"
