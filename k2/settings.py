"""All process settings, read once from ``K2_*`` environment variables.

Every endpoint defaults to loopback. Production (docker compose) sets the same variables to service
names; nothing else differs between the two deployments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from k2.errors import ConfigError

__all__ = ["Settings", "load_settings"]

_PREFIX = "K2_"
_REPO = Path(__file__).resolve().parent.parent


class Settings(BaseModel):
    """Typed, frozen settings. Field ``x`` is read from ``K2_X``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(default=Path(".k2"), description="embedded stack state: data, pids, logs")
    instruments: Path = Field(default=_REPO / "config" / "instruments.yaml")
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="host:port clients use")
    kafka_idempotence: bool = Field(default=False, description="on for Redpanda; Tansu lacks it")
    clickhouse_url: str = Field(default="http://127.0.0.1:8123")
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    clickhouse_kafka_brokers: str = Field(
        default="", description="brokers as ClickHouse's Kafka engine sees them; empty = kafka_bootstrap"
    )
    startup_timeout_s: float = 60.0
    replay_port_base: int = Field(default=9201, description="k2 up --replay: binance, kraken, coinbase ports")
    handler_metrics_port_base: int = Field(default=9101, description="handlers' /metrics: binance, kraken, coinbase")
    backfill: bool = Field(default=False, description="feed handlers fetch trade-id gaps over REST")

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
