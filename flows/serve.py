"""``k2 flows serve``: the two deployments, run by this process when due or when triggered from the UI.

- ``iceberg-offload-15min``     cron ``*/15 * * * *``  flow ``iceberg-offload``      one run at a time
- ``iceberg-maintenance-daily`` cron ``0 2 * * *`` UTC flow ``iceberg-maintenance``  one run at a time

Offload and audit metrics (offload/metrics.py) are served on ``K2_FLOWS_METRICS_PORT`` (also ``/health``).
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, start_http_server

from k2.settings import Settings
from offload.metrics import OffloadCollector
from offload.state import StateStore

__all__ = ["DEPLOYMENTS", "prefect_environment", "serve"]

DEPLOYMENTS = {"iceberg-offload-15min": "*/15 * * * *", "iceberg-maintenance-daily": "0 2 * * *"}


def prefect_environment(settings: Settings) -> dict[str, str]:
    """What Prefect clients and the embedded server read (set before Prefect is imported)."""
    return {
        "PREFECT_API_URL": settings.prefect_api,
        "PREFECT_HOME": str(settings.data_dir.resolve() / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
    }


def serve(settings: Settings) -> None:
    os.environ.update({k: v for k, v in prefect_environment(settings).items() if k not in os.environ})
    from prefect import serve as prefect_serve  # noqa: PLC0415 - after PREFECT_* are set
    from prefect.deployments.runner import RunnerDeployment  # noqa: PLC0415
    from prefect.schedules import Cron  # noqa: PLC0415

    from flows.maintenance_flow import iceberg_maintenance  # noqa: PLC0415
    from flows.offload_flow import iceberg_offload  # noqa: PLC0415

    REGISTRY.register(OffloadCollector(StateStore(settings.state_url)))
    start_http_server(settings.flows_metrics_port, addr=settings.flows_metrics_host)
    offload = iceberg_offload.to_deployment(
        name="iceberg-offload-15min",
        schedule=Cron(DEPLOYMENTS["iceberg-offload-15min"], timezone="UTC"),
        parameters={"tables": None, "engine": settings.offload_engine, "dry_run": False},
        concurrency_limit=1,
        description="ClickHouse -> Iceberg cold.*, incremental by watermark",
    )
    maintenance = iceberg_maintenance.to_deployment(
        name="iceberg-maintenance-daily",
        schedule=Cron(DEPLOYMENTS["iceberg-maintenance-daily"], timezone="UTC"),
        parameters={"tables": None, "engine": settings.offload_engine, "actions": None, "day": None},
        concurrency_limit=1,
        description="compact, expire snapshots, remove orphans, audit hot vs cold for the previous UTC day",
    )
    assert isinstance(offload, RunnerDeployment) and isinstance(maintenance, RunnerDeployment)  # sync API
    prefect_serve(offload, maintenance)
