"""Applies ``clickhouse/<layer>/<object>.sql`` in dependency order, once each.

Order: layers bronze → silver → gold; inside a layer tables, then materialized views, then views;
then by name. Kafka queue tables and the materialized views that read them come last of all: a Kafka
table starts consuming as soon as a view reads it, so the whole chain below it (silver, gold) must
exist by then, or the first blocks would land in bronze only. Applied files are recorded with a checksum of their
text in ``k2.schema_migrations``: re-running is a no-op and an edited applied file is an error
(write a new file instead). ``${NAME}`` placeholders are filled from settings at apply time; the
checksum is of the file as committed, so the same file applies to either deployment.

A placeholder's value can change after a file was applied: the broker address in a Kafka table's
settings (``K2_CLICKHOUSE_KAFKA_BROKERS``) when the broker moves. A Kafka table's settings are fixed
at creation, so each applied file's rendered text is checksummed too, and a Kafka table rendered
differently now is re-pointed: the materialized views that read it are dropped, the table is dropped
and created as rendered now, and the views are created again. The consumer group is unchanged, so
consumption resumes at its committed offsets. An edited Kafka-table file is applied the same way: such a
table holds no rows and its settings cannot be altered in place, so re-creating it is how its settings
(block size, flush interval, consumers) change; the edit is recorded as the file's new checksum. Keep
its consumer group: a new group starts from the topic's start, which silver's dedup gate absorbs at the
cost of re-reading the topic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k2.errors import ClickHouseError, MigrationError

__all__ = ["LAYERS", "Migration", "default_sql_dir", "discover", "migrate"]

LAYERS = ("bronze", "silver", "gold")
_KIND_ORDER = {"table": 0, "kafka": 1, "materialized_view": 2, "view": 3}
_KIND = re.compile(r"^\s*CREATE\s+(?P<mv>MATERIALIZED\s+)?(?P<what>TABLE|VIEW)\b", re.I | re.M)
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_UNSAFE_IN_LITERAL = re.compile(r"['\\\n\r]")
_KAFKA = re.compile(r"^\s*ENGINE\s*=\s*Kafka\b", re.I | re.M)
_CREATED = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)", re.I | re.M)
_CREATED_VIEW = re.compile(r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)", re.I | re.M)

_LEDGER = """
CREATE TABLE IF NOT EXISTS k2.schema_migrations
(
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY name
"""
# Added after the ledger above shipped: the checksum of the text as applied, placeholders filled in.
_LEDGER_RENDERED = "ALTER TABLE k2.schema_migrations ADD COLUMN IF NOT EXISTS rendered_checksum String DEFAULT ''"


@dataclass(frozen=True)
class Migration:
    name: str  # path relative to the SQL folder, e.g. "silver/silver_trades.sql"
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def kind(self) -> str:
        match = _KIND.search(self.text)
        if match is None:
            raise MigrationError(f"{self.name}: expected one CREATE TABLE or CREATE [MATERIALIZED] VIEW")
        if match.group("mv"):
            return "materialized_view"
        if match.group("what").upper() == "VIEW":
            return "view"
        return "kafka" if _KAFKA.search(self.text) else "table"

    def rendered_checksum(self, variables: dict[str, str]) -> str:
        return hashlib.sha256(self.render(variables).encode()).hexdigest()

    def render(self, variables: dict[str, str]) -> str:
        def fill(match: re.Match[str]) -> str:
            if match.group(1) not in variables:
                raise MigrationError(f"{self.name}: unknown placeholder ${{{match.group(1)}}}")
            value = variables[match.group(1)]
            # placeholders sit inside string literals of DDL: a value must not be able to end the literal
            if _UNSAFE_IN_LITERAL.search(value):
                raise MigrationError(f"{self.name}: ${{{match.group(1)}}} may not hold a quote, backslash or newline")
            return value

        return _PLACEHOLDER.sub(fill, self.text)


def default_sql_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "clickhouse"


def discover(sql_dir: Path) -> list[Migration]:
    """Every migration under ``sql_dir`` in the order it must be applied."""
    found: list[tuple[int, int, str, Migration]] = []
    for layer_index, layer in enumerate(LAYERS):
        for path in sorted((sql_dir / layer).glob("*.sql")):
            migration = Migration(f"{layer}/{path.name}", path.read_text())
            found.append((layer_index, _KIND_ORDER[migration.kind], path.name, migration))
    if not found:
        raise MigrationError(f"no migrations found under {sql_dir}")
    queues = [q for *_, mig in found if (q := _queue_name(mig))]

    def consumes(migration: Migration) -> bool:
        return migration.kind == "kafka" or any(_reads(migration, queue) for queue in queues)

    return [m for *_, m in sorted(found, key=lambda t: (consumes(t[3]), *t[:3]))]


def _queue_name(migration: Migration) -> str | None:
    """The table a Kafka-table migration creates; None for any other migration."""
    match = _CREATED.search(migration.text) if migration.kind == "kafka" else None
    return match.group(1) if match else None


def _reads(migration: Migration, table: str) -> bool:
    """True for a materialized view that reads ``table``."""
    return migration.kind == "materialized_view" and bool(
        re.search(rf"\bFROM\s+{re.escape(table)}\b", migration.text, re.I)
    )


def migrate(client: Any, sql_dir: Path, variables: dict[str, str]) -> list[str]:
    """Apply what is not applied yet; return the names applied now."""
    client.command("CREATE DATABASE IF NOT EXISTS k2")
    client.command(_LEDGER)
    client.command(_LEDGER_RENDERED)
    rows = client.query(
        "SELECT name, argMax(checksum, applied_at), argMax(rendered_checksum, applied_at) "
        "FROM k2.schema_migrations GROUP BY name"
    ).result_rows
    applied = {name: checksum for name, checksum, _ in rows}
    rendered = {name: checksum for name, _, checksum in rows}
    migrations = discover(sql_dir)
    edited = {m.name for m in migrations if m.name in applied and applied[m.name] != m.checksum}
    for migration in migrations:
        if migration.name in edited and migration.kind != "kafka":
            raise MigrationError(
                f"{migration.name} was edited after it was applied (checksum {applied[migration.name][:12]} "
                f"applied, {migration.checksum[:12]} now); add a new migration instead of editing it"
            )
    done: list[str] = []

    def record(migration: Migration) -> None:
        client.insert(
            "k2.schema_migrations",
            [[migration.name, migration.checksum, migration.rendered_checksum(variables)]],
            ["name", "checksum", "rendered_checksum"],
        )

    def apply(migration: Migration) -> None:
        try:
            client.command(migration.render(variables))
        except ClickHouseError:
            raise
        except Exception as exc:
            raise MigrationError(f"{migration.name}: {exc}") from exc
        record(migration)
        done.append(migration.name)

    for migration in migrations:
        if migration.name not in applied:
            apply(migration)
        elif rendered[migration.name] != migration.rendered_checksum(variables):
            queue = _queue_name(migration)
            if queue is not None and (rendered[migration.name] or migration.name in edited):
                readers = [m for m in migrations if _reads(m, queue) and m.name in applied]
                for reader in readers:
                    client.command(f"DROP VIEW IF EXISTS {_view_name(reader)}")
                client.command(f"DROP TABLE IF EXISTS {queue}")
                for again in (migration, *readers):
                    apply(again)
            else:  # recorded before rendered checksums were (or a non-Kafka file): record it as it renders now
                record(migration)
    return done


def _view_name(migration: Migration) -> str:
    match = _CREATED_VIEW.search(migration.text)
    if match is None:
        raise MigrationError(f"{migration.name}: expected CREATE MATERIALIZED VIEW")
    return match.group(1)
