"""Errors of the k2 package, each saying whether retrying can help.

K2Error
├── ConfigError            bad settings or config file (not retriable: fix the input)
├── ClickHouseError        ClickHouse refused a statement (retriable only if ``retriable``)
│   └── MigrationError     a migration file is inconsistent with what was applied
└── StackError             the embedded stack cannot start or stop as asked (port taken, already running)
"""

from __future__ import annotations

__all__ = ["ClickHouseError", "ConfigError", "K2Error", "MigrationError", "StackError"]


class K2Error(Exception):
    """Base of every error K2 raises on purpose."""

    retriable: bool = False


class ConfigError(K2Error):
    """Settings or a config file are invalid; the message names the file, line and key."""


class ClickHouseError(K2Error):
    """ClickHouse answered with an exception."""

    def __init__(self, message: str, code: int = 0, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retriable = retriable


class MigrationError(ClickHouseError):
    """An applied migration file was edited, or a migration failed."""


class StackError(K2Error):
    """The embedded stack cannot do what was asked (already running, port taken, component unhealthy)."""
