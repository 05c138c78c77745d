"""docker-compose.v2.yml, offline: the real Compose binary accepts it, a lint catches what Compose does
not, and the files it mounts (ClickHouse users, topics, scrape targets) agree with it and with the code."""

from __future__ import annotations

import copy
import json
import re
import secrets
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import chdb
import pytest
import yaml

from feed_handlers.instruments import load_instruments
from k2.settings import Settings
from tests.deploy import compose_lint
from tests.deploy.tools import COMPOSE_BINARY, COMPOSE_FILE, DOCKER, ENV_EXAMPLE, run
from tests.support import REPO

USERS_XML = DOCKER / "clickhouse" / "users.d" / "k2-users.xml"
SERVER_XML = DOCKER / "clickhouse" / "config.d" / "k2-server.xml"


def _filled_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """.env.example with a distinct random value for every empty (secret) entry."""
    values = compose_lint.parse_env_file(ENV_EXAMPLE.read_text())
    filled = {k: v or f"{k.lower()}-{secrets.token_hex(8)}" for k, v in values.items()}
    path = tmp_path / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in filled.items()))
    return path, filled


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str]]:
    env_file, filled = _filled_env(tmp_path_factory.mktemp("compose"))
    base = (COMPOSE_BINARY, "--project-directory", REPO, "--env-file", env_file, "-f", COMPOSE_FILE, "config")
    run(*base, "-q")  # the real validation: schema, interpolation, references
    config = json.loads(run(*base, "--format", "json").stdout)
    return config, filled


def test_compose_binary_rejects_missing_secrets() -> None:
    """With .env.example as shipped (secrets empty) compose refuses to resolve the file."""
    result = run(COMPOSE_BINARY, "--project-directory", REPO, "--env-file", ENV_EXAMPLE, "-f", COMPOSE_FILE,
                 "config", "-q", check=False)  # fmt: skip
    assert result.returncode != 0
    assert re.search(r"required variable \w+ is missing a value: set \w+ in \.env", result.stderr), result.stderr


def test_compose_passes_the_lint(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    config, _ = resolved
    env_example = compose_lint.parse_env_file(ENV_EXAMPLE.read_text())
    assert compose_lint.lint(config, COMPOSE_FILE.read_text(), env_example) == []
    assert set(config["services"]) >= {
        "redpanda", "redpanda-init", "redpanda-console", "clickhouse", "clickhouse-migrate", "feed-handler-binance",
        "feed-handler-kraken", "feed-handler-coinbase", "k2-exporter", "prefect-server", "prefect-db",
        "prefect-worker", "spark", "spark-worker", "minio", "minio-init", "iceberg-rest", "prometheus",
        "alertmanager", "grafana",
    }  # fmt: skip


def test_lint_catches_what_compose_accepts(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    """Each mistake `docker compose config` lets through is reported by the lint."""
    config = copy.deepcopy(resolved[0])
    services = config["services"]
    services["grafana"]["restart"] = "sometimes"
    del services["clickhouse"]["healthcheck"]
    services["prometheus"]["image"] = "prom/prometheus:latest"
    services["alertmanager"]["image"] = "prom/alertmanager"
    del services["spark"]["deploy"]
    services["minio"]["ports"].append({"published": "3000", "target": 3000, "host_ip": "127.0.0.1", "protocol": "tcp"})
    services["redpanda-console"]["ports"][0]["host_ip"] = "0.0.0.0"
    services["prefect-db"]["volumes"] = []
    services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] = "true"
    services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] = "minioadmin"
    text = (
        COMPOSE_FILE.read_text().replace(
            "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env}", "${GRAFANA_ADMIN_PASSWORD:-admin}"
        )
        + "${NEW}"
    )
    env_example = {**compose_lint.parse_env_file(ENV_EXAMPLE.read_text()), "UNUSED": "", "MINIO_ROOT_USER": "admin"}

    problems = compose_lint.lint(config, text, env_example)
    expected = [
        "grafana: restart 'sometimes' is not no|always|unless-stopped|on-failure[:N]",
        "clickhouse: long-running service without a healthcheck",
        "grafana: waits for clickhouse to be healthy, but clickhouse has no healthcheck",
        "clickhouse-migrate: waits for clickhouse to be healthy, but clickhouse has no healthcheck",
        "prometheus: image 'prom/prometheus:latest' is not pinned to a version",
        "alertmanager: image 'prom/alertmanager' is not pinned to a version",
        "spark: no memory limit",
        "host port 3000/tcp published by grafana, minio",
        "redpanda-console: port 8080 published on 0.0.0.0",
        "prefect-db: keeps state but has no named volume",
        "${NEW} is used but not in .env.example",
        "UNUSED is in .env.example but not used",
        "secret GRAFANA_ADMIN_PASSWORD is used as ${GRAFANA_ADMIN_PASSWORD:-admin}: require it with :?",
        ".env.example ships a value for secret MINIO_ROOT_USER",
        "grafana: Grafana anonymous access is enabled",
        "minio: MINIO_ROOT_PASSWORD is a default credential ('minioadmin')",
    ]
    assert sorted(problems) == sorted(expected)


def test_k2_services_use_valid_settings_and_consistent_ports(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    """An unknown K2_* variable stops a K2 process at start (k2/settings.py): none may ship."""
    config, _ = resolved
    k2_services = {n: s for n, s in config["services"].items() if s.get("image", "").startswith("k2:")}
    assert set(k2_services) == {"clickhouse-migrate", "feed-handler-binance", "feed-handler-kraken",
                                "feed-handler-coinbase", "k2-exporter", "prefect-worker"}  # fmt: skip
    for name, service in k2_services.items():
        unknown = [
            k for k in service["environment"] if k.startswith("K2_") and k[3:].lower() not in Settings.model_fields
        ]
        assert unknown == [], f"{name}: {unknown}"
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
    # every scrape target of prometheus.yml is a service listening on that port
    prometheus = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    listening = {
        "feed-handler-binance": "9101", "feed-handler-kraken": "9102", "feed-handler-coinbase": "9103",
        "k2-exporter": config["services"]["k2-exporter"]["environment"]["K2_EXPORTER_PORT"],
        "prefect-worker": config["services"]["prefect-worker"]["environment"]["K2_FLOWS_METRICS_PORT"],
        "redpanda": "9644", "clickhouse": "9363", "localhost": "9090", "alertmanager": "9093",
    }  # fmt: skip
    for job in prometheus["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.split(":")
                assert host == "localhost" or host in config["services"], target
                assert listening[host] == port, target
    for exchange, port in (("binance", "9101"), ("kraken", "9102"), ("coinbase", "9103")):
        service = config["services"][f"feed-handler-{exchange}"]
        assert service["command"][:2] == ["handler", exchange]
        assert service["command"][service["command"].index("--metrics-port") + 1] == port
        assert f"127.0.0.1:{port}/health" in " ".join(service["healthcheck"]["test"])
        assert {"type": "bind", "target": "/app/config", "read_only": True}.items() <= service["volumes"][0].items()
    # Spark executors and the pyspark driver must be the same release
    pyspark = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
                   ["spark"] if d.startswith("pyspark=="))  # fmt: skip
    for name in ("spark", "spark-worker"):
        assert config["services"][name]["image"].startswith(f"apache/spark:{pyspark.split('==')[1]}-")


def test_migrations_run_at_start_before_anything_reads_clickhouse(
    resolved: tuple[dict[str, Any], dict[str, str]],
) -> None:
    config, _ = resolved
    migrate = config["services"]["clickhouse-migrate"]
    assert migrate["command"] == ["db", "migrate"]
    assert migrate["environment"]["K2_CLICKHOUSE_USER"] == "k2_ingest"
    assert migrate["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["redpanda-init"]["condition"] == "service_completed_successfully"
    for name in ("k2-exporter", "prefect-worker"):
        assert config["services"][name]["depends_on"]["clickhouse-migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_topic_init_matches_the_partitions_in_instruments_yaml() -> None:
    script = (DOCKER / "redpanda" / "init-topics.sh").read_text()
    declared = dict(re.findall(r"(\w+):(\d+)", re.search(r"for spec in ([^;]+);", script).group(1)))  # type: ignore[union-attr]
    configured = {
        ex: str(c.partitions) for ex, c in load_instruments(REPO / "config" / "instruments.yaml").exchanges.items()
    }
    assert declared == configured == {"binance": "40", "kraken": "20", "coinbase": "20"}


def _users() -> dict[str, ET.Element]:
    return {user.tag: user for user in ET.parse(USERS_XML).getroot().find("users")}  # type: ignore[union-attr]


def test_clickhouse_users_by_role_with_passwords_from_env(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    config, filled = resolved
    clickhouse_env = config["services"]["clickhouse"]["environment"]
    users = _users()
    assert set(users) == {"default", "k2_ingest", "k2_offload", "k2_grafana", "k2_exporter"}
    # default (removed) and each role's privileges: tests/security/test_credentials.py
    grants = {}
    for name, user in users.items():
        if name == "default":
            continue
        password = user.find("password")
        assert password is not None and password.text is None, name
        env_var = password.get("from_env")
        assert env_var and clickhouse_env[env_var] == filled[env_var], name
        grants[name] = [q.text or "" for q in user.find("grants")]  # type: ignore[union-attr]
        for query in grants[name]:  # ClickHouse's own parser: a misspelt privilege fails here
            chdb.query(f"EXPLAIN AST {query} TO {name}", "TSV")
    writes = re.compile(r"\b(INSERT|ALTER|CREATE TABLE|TRUNCATE|WRITE)\b")
    assert [g for g in grants["k2_grafana"] + grants["k2_exporter"] if writes.search(g)] == []
    assert [g for g in grants["k2_offload"] if "k2.*" in g and writes.search(g)] == []
    assert "GRANT READ, WRITE ON KAFKA" in grants["k2_ingest"]
    profiles = ET.parse(USERS_XML).getroot().find("profiles")
    assert profiles.findtext("k2_readonly/readonly") == "2"  # type: ignore[union-attr]
    for name in ("k2_grafana", "k2_exporter"):
        assert users[name].findtext("profile") == "k2_readonly"
    # each K2 service logs in as its role with that role's password
    roles = {"clickhouse-migrate": "k2_ingest", "k2-exporter": "k2_exporter", "prefect-worker": "k2_offload"}
    for service, user in roles.items():
        env = config["services"][service]["environment"]
        assert env["K2_CLICKHOUSE_USER"] == user
        assert env["K2_CLICKHOUSE_PASSWORD"] == filled[users[user].find("password").get("from_env")]  # type: ignore[union-attr, index]
    grafana = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "k2.yml").read_text())
    ch = next(d for d in grafana["datasources"] if d["uid"] == "k2-clickhouse")
    assert ch["jsonData"]["username"] == "k2_grafana"
    assert ch["secureJsonData"]["password"] == "$CLICKHOUSE_GRAFANA_PASSWORD"
    assert (
        config["services"]["grafana"]["environment"]["CLICKHOUSE_GRAFANA_PASSWORD"]
        == filled["CLICKHOUSE_GRAFANA_PASSWORD"]
    )


def test_kafka_engine_pool_covers_every_queue_table_consumer() -> None:
    server = ET.parse(SERVER_XML).getroot()
    pool = int(server.findtext("background_message_broker_schedule_pool_size") or 0)
    consumers = [int(m) for f in sorted((REPO / "clickhouse").glob("*/*_queue.sql"))
                 for m in re.findall(r"kafka_num_consumers\s*=\s*(\d+)", f.read_text())]  # fmt: skip
    assert len(consumers) == 3
    assert pool >= sum(consumers)
    assert {e.get("from_env") for e in server.find("named_collections/k2_s3")} == {  # type: ignore[union-attr]
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
    }
