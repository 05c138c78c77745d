"""Turn ``CREATE TABLE ... ENGINE = Kafka`` into what chDB can hold, and back into consumer settings.

chDB validates Kafka tables but never consumes them. The embedded server therefore stores a Kafka
table as an ``ENGINE = Null`` table with ClickHouse's Kafka virtual columns as real columns (so the
very same materialized views attach to it) and keeps the engine settings in the table comment, where
they survive restarts. ``k2.embedded.kafka_engine`` reads them back and consumes the topic.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from k2.errors import ClickHouseError

__all__ = [
    "COMMENT_MARKER",
    "VIRTUAL_COLUMNS",
    "KafkaTableSpec",
    "rewrite_create_kafka",
    "spec_from_comment",
    "strip_comments",
]

COMMENT_MARKER = "k2-embedded-kafka:"

# ClickHouse's Kafka engine virtual columns (stream error mode adds the last two).
VIRTUAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_topic", "LowCardinality(String)"),
    ("_key", "String"),
    ("_offset", "UInt64"),
    ("_partition", "UInt64"),
    ("_timestamp", "Nullable(DateTime('UTC'))"),
    ("_timestamp_ms", "Nullable(DateTime64(3, 'UTC'))"),
    ("`_headers.name`", "Array(String)"),
    ("`_headers.value`", "Array(String)"),
    ("_raw_message", "String"),
    ("_error", "String"),
)

_POSITIONAL = ("kafka_broker_list", "kafka_topic_list", "kafka_group_name", "kafka_format")
_SUPPORTED_FORMATS = ("JSONEachRow",)
_ERROR_MODES = ("default", "stream")

_CREATE = re.compile(r"^\s*CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>[`\"\w.]+)\s*\(", re.IGNORECASE)
_ENGINE = re.compile(r"^\s*ENGINE\s*=\s*Kafka\b\s*(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class KafkaTableSpec:
    """What a Kafka table asks for, in ClickHouse's own setting names."""

    database: str
    table: str
    broker_list: str
    topics: tuple[str, ...]
    group_name: str
    format: str = "JSONEachRow"
    handle_error_mode: str = "default"
    num_consumers: int = 1
    max_block_size: int = 65536
    flush_interval_ms: int = 7500
    skip_broken_messages: int = 0

    @property
    def qualified_name(self) -> str:
        return f"`{self.database}`.`{self.table}`"

    def to_comment(self) -> str:
        return COMMENT_MARKER + json.dumps(asdict(self), sort_keys=True)


def spec_from_comment(comment: str) -> KafkaTableSpec | None:
    """The spec stored by :func:`rewrite_create_kafka`, or None for an ordinary table."""
    if not comment.startswith(COMMENT_MARKER):
        return None
    data = json.loads(comment[len(COMMENT_MARKER) :])
    data["topics"] = tuple(data["topics"])
    return KafkaTableSpec(**data)


def strip_comments(sql: str) -> str:
    """Remove ``--`` and ``/* */`` comments outside string literals."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            out.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _matching_paren(sql: str, open_at: int) -> int:
    depth = 0
    i = open_at
    while i < len(sql):
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < len(sql) and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            i = j
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ClickHouseError("Syntax error: unbalanced parentheses in CREATE TABLE", 62)


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    parts: list[str] = []
    depth, start, i = 0, 0, 0
    while i < len(text):
        c = text[i]
        if c in "'\"`":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _literal(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("\\'", "'").replace("''", "'")
    return value


def _unquote_ident(name: str) -> str:
    return name.strip('`"')


def rewrite_create_kafka(sql: str, current_database: str = "default") -> tuple[str, KafkaTableSpec] | None:
    """Rewrite a Kafka CREATE TABLE for chDB; None when ``sql`` is anything else."""
    text = strip_comments(sql).strip().rstrip(";")
    head = _CREATE.match(text)
    if head is None:
        return None
    close = _matching_paren(text, head.end() - 1)
    engine = _ENGINE.match(text[close + 1 :])
    if engine is None:
        return None
    name = head.group("name")
    database, _, table = name.rpartition(".")
    database = _unquote_ident(database) if database else current_database
    table = _unquote_ident(table)

    settings: dict[str, str] = {}
    rest = engine.group("rest").strip()
    if rest.startswith("("):
        args_end = _matching_paren(rest, 0)
        for key, arg in zip(_POSITIONAL, _split_top_level(rest[1:args_end]), strict=False):
            settings[key] = _literal(arg)
        rest = rest[args_end + 1 :].strip()
    if rest:
        match = re.match(r"^SETTINGS\s+(?P<kv>.*)$", rest, re.IGNORECASE | re.DOTALL)
        if match is None:
            raise ClickHouseError(f"Syntax error: unexpected text after ENGINE = Kafka: {rest[:80]!r}", 62)
        for item in _split_top_level(match.group("kv")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ClickHouseError(f"Syntax error: expected key = value in SETTINGS, got {item!r}", 62)
            settings[key.strip()] = _literal(value)
    spec = _spec(database, table, settings)
    columns = text[head.end() : close].strip().rstrip(",")
    virtual = ",\n    ".join(f"{n} {t}" for n, t in VIRTUAL_COLUMNS)
    comment = spec.to_comment().replace("\\", "\\\\").replace("'", "\\'")
    rewritten = (
        f"CREATE TABLE {head.group('ine') or ''}`{database}`.`{table}`\n(\n    {columns},\n    {virtual}\n)\n"
        f"ENGINE = Null\nCOMMENT '{comment}'"
    )
    return rewritten, spec


def _spec(database: str, table: str, settings: dict[str, str]) -> KafkaTableSpec:
    for required in _POSITIONAL:
        if not settings.get(required):
            raise ClickHouseError(f"Required parameter '{required}' for storage Kafka is not set", 36)
    fmt = settings["kafka_format"]
    if fmt not in _SUPPORTED_FORMATS:
        raise ClickHouseError(
            f"kafka_format '{fmt}' is not supported by the embedded server (supported: "
            f"{', '.join(_SUPPORTED_FORMATS)}); production clickhouse-server supports it",
            36,
        )
    mode = settings.get("kafka_handle_error_mode", "default")
    if mode not in _ERROR_MODES:
        raise ClickHouseError(f"Unknown kafka_handle_error_mode '{mode}'", 36)
    try:
        return KafkaTableSpec(
            database=database,
            table=table,
            broker_list=settings["kafka_broker_list"],
            topics=tuple(t.strip() for t in settings["kafka_topic_list"].split(",") if t.strip()),
            group_name=settings["kafka_group_name"],
            format=fmt,
            handle_error_mode=mode,
            num_consumers=int(settings.get("kafka_num_consumers", 1)),
            max_block_size=int(settings.get("kafka_max_block_size", 65536)),
            flush_interval_ms=int(settings.get("kafka_flush_interval_ms", 7500)),
            skip_broken_messages=int(settings.get("kafka_skip_broken_messages", 0)),
        )
    except ValueError as exc:
        raise ClickHouseError(f"Bad numeric Kafka setting: {exc}", 36) from exc
