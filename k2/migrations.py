"""Applies ``clickhouse/<layer>/<object>.sql`` in dependency order, once each.

Order: layers bronze → silver → gold; inside a layer tables, then materialized views, then views;
then by name. Kafka queue tables and the materialized views that read them come last of all: a Kafka
table starts consuming as soon as a view reads it, so the whole chain below it (silver, gold) must
exist by then, or the first blocks would land in bronze only. Applied files are recorded with a checksum of their
text in ``k2.schema_migrations``: re-running is a no-op and an edited applied file is an error
(write a new file instead). ``${NAME}`` placeholders are filled from settings at apply time; the
checksum is of the file as committed, so the same file applies to either deployment.
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
    queues = [m.group(1) for *_, mig in found if mig.kind == "kafka" and (m := _CREATED.search(mig.text))]
    reads_queue = re.compile(rf"\bFROM\s+(?:{'|'.join(map(re.escape, queues))})\b", re.I) if queues else None

    def consumes(migration: Migration) -> bool:
        if migration.kind == "kafka":
            return True
        return (
            migration.kind == "materialized_view"
            and reads_queue is not None
            and bool(reads_queue.search(migration.text))
        )

    return [m for *_, m in sorted(found, key=lambda t: (consumes(t[3]), *t[:3]))]


def migrate(client: Any, sql_dir: Path, variables: dict[str, str]) -> list[str]:
    """Apply what is not applied yet; return the names applied now."""
    client.command("CREATE DATABASE IF NOT EXISTS k2")
    client.command(_LEDGER)
    applied = dict(client.query("SELECT name, checksum FROM k2.schema_migrations").result_rows)
    migrations = discover(sql_dir)
    for migration in migrations:
        if migration.name in applied and applied[migration.name] != migration.checksum:
            raise MigrationError(
                f"{migration.name} was edited after it was applied (checksum {applied[migration.name][:12]} "
                f"applied, {migration.checksum[:12]} now); add a new migration instead of editing it"
            )
    done: list[str] = []
    for migration in migrations:
        if migration.name in applied:
            continue
        try:
            client.command(migration.render(variables))
        except ClickHouseError:
            raise
        except Exception as exc:
            raise MigrationError(f"{migration.name}: {exc}") from exc
        client.insert("k2.schema_migrations", [[migration.name, migration.checksum]], ["name", "checksum"])
        done.append(migration.name)
    return done
