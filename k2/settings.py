"""All process settings, read once from ``K2_*`` environment variables.

Every endpoint defaults to loopback. Production (docker compose) sets the same variables to service
names; nothing else differs between the two deployments.

Secrets (passwords, keys, and the database URLs that may carry a password) are ``SecretStr``: ``repr``,
``str``, logs and dumps show ``**********``, and a caller reads one with ``get_secret_value()`` only
where it hands it to a client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from k2.errors import ConfigError

__all__ = ["Settings", "load_settings", "redact_url"]

_PREFIX = "K2_"

#: The feed handlers' producer linger. 25 ms, not 5: the embedded broker (Tansu) spends more on each fetch
#: the more record batches it holds, and at 5 ms a busy topic's batches made produce -> silver latency creep
#: from 0.3 s to over 1 s within half a minute (docs/benchmarks.md); at 25 ms it stays flat under 0.3 s.
KAFKA_LINGER_MS = 25
_REPO = Path(__file__).resolve().parent.parent


class Settings(BaseModel):
    """Typed, frozen settings. Field ``x`` is read from ``K2_X``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(default=Path(".k2"), description="embedded stack state: data, pids, logs")
    instruments: Path = Field(default=_REPO / "config" / "instruments.yaml")
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="host:port clients use")
    kafka_idempotence: bool = Field(default=False, description="on for Redpanda; Tansu lacks it")
    kafka_linger_ms: int = Field(
        default=KAFKA_LINGER_MS, ge=0, le=1000, description="how long the feed handlers' producer gathers a batch"
    )
    clickhouse_url: str = Field(default="http://127.0.0.1:8123")
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_kafka_brokers: str = Field(
        default="", description="brokers as ClickHouse's Kafka engine sees them; empty = kafka_bootstrap"
    )
    clickhouse_insert_lanes: int = Field(
        default=1, ge=1, le=16,
        description="embedded ClickHouse: key-disjoint parts of a Kafka block inserted at once (chDB connections)",
    )  # fmt: skip
    startup_timeout_s: float = 60.0
    replay_port_base: int = Field(default=9201, description="k2 up --replay: binance, kraken, coinbase ports")
    handler_metrics_port_base: int = Field(default=9101, description="handlers' /metrics: binance, kraken, coinbase")
    backfill: bool = Field(default=False, description="feed handlers fetch trade-id gaps over REST")
    # Iceberg cold tier (offload/, flows/): empty URIs mean "under data_dir" (the embedded layout)
    offload_engine: Literal["pyiceberg", "spark"] = "pyiceberg"
    iceberg_catalog: Literal["sql", "rest"] = Field(default="sql", description="sql: SQLite/Postgres; rest: REST")
    iceberg_catalog_uri: SecretStr = Field(
        default=SecretStr(""), description="SQLAlchemy URL (may hold a password) or REST URL; empty = SQLite"
    )
    iceberg_warehouse: str = Field(default="", description="file:// or s3:// URI; empty = data_dir/iceberg/warehouse")
    iceberg_s3_endpoint: str = ""
    iceberg_s3_access_key_id: str = ""
    iceberg_s3_secret_access_key: SecretStr = SecretStr("")
    iceberg_s3_region: str = "us-east-1"
    offload_state_url: SecretStr = Field(
        default=SecretStr(""), description="watermarks + audit log DB (URL may hold a password); empty = SQLite"
    )
    offload_safety_buffer_s: float = Field(default=60.0, ge=0, description="rows younger than this wait a run")
    offload_lock_ttl_s: float = Field(default=3600.0, gt=0, description="a crashed run's table lock expires")
    offload_retries: int = Field(default=2, ge=0, description="extra attempts per table before reporting it")
    iceberg_rest_credential: SecretStr = Field(
        default=SecretStr(""), description="client_id:secret for the REST catalog's OAuth"
    )
    cold_clickhouse: Literal["auto", "none"] = Field(
        default="auto", description="auto: cold.<table> in ClickHouse reads each Iceberg table where it lies"
    )
    clickhouse_s3_collection: str = Field(
        default="", description="named collection with S3 credentials in ClickHouse; empty = inline keys"
    )
    spark_jars: str = Field(default="", description="comma-separated jar paths; empty = spark.jars.packages")
    spark_java_library_path: str = ""
    spark_master: str = "local[1]"
    prefect_port: int = 4200
    flows_metrics_port: int = Field(default=9191, description="`k2 flows serve`: /metrics (offload, audit), /health")
    flows_metrics_host: str = "127.0.0.1"
    prefect_api_url: str = Field(default="", description="empty = the embedded server on prefect_port")
    exporter_port: int = Field(default=9190, description="`k2 exporter`: /metrics derived from ClickHouse")
    exporter_host: str = "127.0.0.1"

    @property
    def iceberg_dir(self) -> Path:
        return self.data_dir.resolve() / "iceberg"

    @property
    def catalog_uri(self) -> str:
        return self.iceberg_catalog_uri.get_secret_value() or f"sqlite:///{self.iceberg_dir / 'catalog.db'}"

    @property
    def warehouse_uri(self) -> str:
        return self.iceberg_warehouse or (self.iceberg_dir / "warehouse").as_uri()

    @property
    def state_url(self) -> str:
        return self.offload_state_url.get_secret_value() or f"sqlite:///{self.data_dir.resolve() / 'offload.db'}"

    @property
    def prefect_api(self) -> str:
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def kafka_brokers_for_clickhouse(self) -> str:
        return self.clickhouse_kafka_brokers or self.kafka_bootstrap

    @property
    def clickhouse_host(self) -> str:
        return urlsplit(self.clickhouse_url).hostname or "127.0.0.1"

    @property
    def clickhouse_port(self) -> int:
        return urlsplit(self.clickhouse_url).port or 8123

    @property
    def kafka_host(self) -> str:
        return self.kafka_bootstrap.rsplit(":", 1)[0]

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.rsplit(":", 1)[1])


def redact_url(url: str) -> str:
    """``url`` fit to print: a password in it (``scheme://user:password@host``) becomes ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}"))


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from ``K2_*`` variables; an unknown ``K2_`` variable is an error, not ignored."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for key, value in env.items():
        if key.startswith(_PREFIX):
            name = key[len(_PREFIX) :].lower()
            if name not in Settings.model_fields:
                known = ", ".join(_PREFIX + f.upper() for f in Settings.model_fields)
                raise ConfigError(f"unknown environment variable {key} (known: {known})")
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{_PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
