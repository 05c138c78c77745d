"""ClickHouse client factory: one place that turns settings into a clickhouse-connect client."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from k2.errors import ClickHouseError
from k2.settings import Settings

__all__ = ["connect", "raw_query"]

_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+\w+\s*;?\s*$", re.IGNORECASE)


def connect(settings: Settings, **kwargs: Any) -> Any:
    """A clickhouse-connect client for ``settings.clickhouse_url``; errors become ClickHouseError."""
    try:
        return clickhouse_connect.get_client(
            dsn=settings.clickhouse_url,
            username=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            **kwargs,
        )
    except DriverError as exc:
        raise ClickHouseError(f"cannot connect to ClickHouse at {settings.clickhouse_url}: {exc}") from exc


def raw_query(client: Any, sql: str, fmt: str = "TabSeparated", parameters: Mapping[str, str] | None = None) -> bytes:
    """What ClickHouse answers to ``sql``, byte for byte (a FORMAT clause in ``sql`` wins over ``fmt``).

    ``parameters`` fill ``{name:Type}`` placeholders on the server side."""
    has_format = _FORMAT_CLAUSE.search(sql) is not None
    try:
        return bytes(client.raw_query(sql, parameters=dict(parameters or {}), fmt=None if has_format else fmt))
    except DriverError as exc:
        raise ClickHouseError(str(exc)) from exc
