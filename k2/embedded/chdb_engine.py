"""One chDB session per data directory, shared by the HTTP endpoint and the Kafka consumers.

chDB is the ClickHouse engine in-process; one process owns a data directory. Every statement goes
through :meth:`ChdbEngine.execute`, which serialises access, translates chDB's exceptions into
:class:`~k2.errors.ClickHouseError` with the ClickHouse error code, and intercepts Kafka tables
(see :mod:`k2.embedded.kafka_ddl`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chdb
import orjson

from k2.embedded.kafka_ddl import (
    COMMENT_MARKER,
    KafkaTableSpec,
    rewrite_create_kafka,
    spec_from_comment,
    strip_comments,
)
from k2.errors import ClickHouseError

__all__ = ["ChdbEngine", "InsertLane", "Result"]

_CODE = re.compile(r"Code:\s*(\d+)")
_DDL = re.compile(r"^\s*(CREATE|DROP|ATTACH|DETACH|RENAME|EXCHANGE)\b", re.IGNORECASE)
_USE = re.compile(r"^\s*USE\s+[`\"]?(\w+)[`\"]?\s*;?\s*$", re.IGNORECASE)
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Codes a retry can fix (memory, timeouts, too many parts, table being dropped).
_RETRIABLE_CODES = frozenset({159, 160, 164, 202, 209, 210, 241, 252, 425})


class Result:
    """Bytes of one query's output in the format asked for, with its row count."""

    def __init__(self, data: bytes, rows: int, elapsed_s: float) -> None:
        self.data = data
        self.rows = rows
        self.elapsed_s = elapsed_s


def _setting_literal(value: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _translate(exc: BaseException) -> ClickHouseError:
    message = str(exc).strip()
    match = _CODE.search(message)
    code = int(match.group(1)) if match else 1000
    return ClickHouseError(message, code, retriable=code in _RETRIABLE_CODES)


def _shutting_down() -> ClickHouseError:
    return ClickHouseError("Server is shutting down", 210, retriable=True)


def _run(conn: Any, sql: str, fmt: str, params: Mapping[str, str] | None, k2_arrow: Any) -> Result:
    # chDB resolves Python(k2_arrow) by looking the name up in the calling frame's locals.
    try:
        res = conn.query(sql, fmt, params=dict(params)) if params else conn.query(sql, fmt)
    except Exception as exc:
        raise _translate(exc) from exc
    del k2_arrow
    return Result(res.bytes(), int(res.rows_read()), float(res.elapsed()))


class InsertLane:
    """One more connection to the engine's data directory, for inserts that run beside the session's.

    chDB runs one statement per connection at a time, and runs it on one thread; statements on two
    connections to the same directory run in parallel (chDB >= 4.4). A lane takes plain statements only:
    fully qualified names, no ``USE``, query parameters, session settings or DDL (those are the session's).
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._closed = False

    def execute(self, sql: str, fmt: str = "TabSeparated", arrow: Any = None) -> Result:
        """Run one statement; ``arrow`` (a pyarrow Table) is readable inside ``sql`` as ``Python(k2_arrow)``."""
        with self._lock:
            if self._closed:
                raise _shutting_down()
            return _run(self._conn, sql, fmt, None, arrow)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


class ChdbEngine:
    """Serialised access to a chDB session rooted at ``data_dir``, plus insert lanes beside it."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._path = str(data_dir)
        self._lock = threading.RLock()
        self._conn: Any = chdb.connect(self._path)  # type: ignore[no-untyped-call]
        self._lanes: list[InsertLane] = []
        self._database = "default"
        self._ddl_listeners: list[Callable[[], None]] = []
        self._closed = False

    @property
    def current_database(self) -> str:
        return self._database

    def on_ddl(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every DDL statement (tables may have appeared or gone)."""
        self._ddl_listeners.append(listener)

    def execute(
        self,
        sql: str,
        fmt: str = "TabSeparated",
        params: Mapping[str, str] | None = None,
        database: str | None = None,
        arrow: Any = None,
    ) -> Result:
        """Run one statement and return its output in ``fmt`` (a FORMAT clause in ``sql`` wins).

        ``arrow`` (a pyarrow Table) is readable inside ``sql`` as ``Python(k2_arrow)``.
        """
        bare = strip_comments(sql)
        is_ddl = _DDL.match(bare) is not None
        use = _USE.match(bare)
        with self._lock:
            if self._closed:
                raise _shutting_down()
            if database and database != self._database:
                if not re.fullmatch(r"\w+", database):
                    raise ClickHouseError(f"Database name is not valid: {database[:40]!r}", 81)
                self._query(f"USE `{database}`", "TabSeparated", None, None)
                self._database = database
            kafka = rewrite_create_kafka(sql, self._database) if is_ddl else None
            if kafka is not None:
                sql = kafka[0]
            result = self._query(sql, fmt, params, arrow)
            if use is not None:
                self._database = use.group(1)
        if is_ddl:
            for listener in self._ddl_listeners:
                listener()
        return result

    def _query(self, sql: str, fmt: str, params: Mapping[str, str] | None, k2_arrow: Any) -> Result:
        return _run(self._conn, sql, fmt, params, k2_arrow)

    def open_lane(self) -> InsertLane:
        """A new connection to this data directory (see ``InsertLane``); closed by ``close()`` at the latest."""
        with self._lock:
            if self._closed:
                raise _shutting_down()
            self._lanes = [lane for lane in self._lanes if not lane.closed]
            lane = InsertLane(chdb.connect(self._path))  # type: ignore[no-untyped-call]
            self._lanes.append(lane)
            return lane

    @contextmanager
    def session_settings(self, settings: Mapping[str, str]) -> Iterator[None]:
        """Apply ClickHouse settings for the statements run inside the block, then restore them."""
        with self._lock:
            names = {k: v for k, v in settings.items() if _SETTING_NAME.fullmatch(k)}
            rows = self._query(
                "SELECT name, value FROM system.settings WHERE has({names:Array(String)}, name)",
                "JSONCompactEachRow",
                {"names": "[" + ",".join(f"'{n}'" for n in names) + "]"},
                None,
            ).data
            previous = dict(orjson.loads(line) for line in rows.splitlines())
            unknown = sorted(set(names) - set(previous))
            if unknown:
                raise ClickHouseError(f"Unknown setting {unknown[0]}", 115)
            self._set(names)
            try:
                yield
            finally:
                self._set(previous)

    def _set(self, settings: Mapping[str, str]) -> None:
        if settings:
            self._query(
                "SET " + ", ".join(f"{k} = {_setting_literal(v)}" for k, v in settings.items()),
                "TSV",
                None,
                None,
            )

    def kafka_tables(self) -> list[KafkaTableSpec]:
        """Kafka tables that stream now, from the specs kept in their comments.

        As on clickhouse-server, a Kafka table streams only while a materialized view reads it: a message
        consumed with no view attached would be committed and lost.
        """
        out = self.execute(
            "SELECT comment FROM system.tables WHERE comment LIKE {marker:String} AND notEmpty(dependencies_table) "
            "ORDER BY database, name",
            "JSONCompactEachRow",
            params={"marker": COMMENT_MARKER + "%"},
        ).data
        specs: list[KafkaTableSpec] = []
        for line in out.splitlines():
            spec = spec_from_comment(orjson.loads(line)[0])
            if spec is not None:
                specs.append(spec)
        return specs

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                for lane in self._lanes:  # before the session: the last connection out unbinds the directory
                    lane.close()
                self._conn.close()
