"""Offload state outside Iceberg: the watermark mirror, per-table run locks and the audit log.

SQLite in the embedded stack, PostgreSQL in production (any SQLAlchemy URL). The mirror is for people
and dashboards; the source of truth for the watermark is the Iceberg snapshot (offload/catalog.py).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from offload.errors import TableBusyError

__all__ = ["AuditRow", "StateStore", "WatermarkRow"]

_META = sa.MetaData()
WATERMARKS = sa.Table(
    "offload_watermarks", _META,
    sa.Column("table_name", sa.String(128), primary_key=True),
    sa.Column("watermark_us", sa.BigInteger, nullable=False),
    sa.Column("snapshot_id", sa.BigInteger),
    sa.Column("rows_last", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_total", sa.BigInteger, nullable=False, default=0),
    sa.Column("last_success_at", sa.Float),
    sa.Column("last_duration_s", sa.Float),
    sa.Column("failures_total", sa.BigInteger, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
)  # fmt: skip
LOCKS = sa.Table(
    "offload_locks", _META,
    sa.Column("table_name", sa.String(128), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)  # fmt: skip
AUDIT = sa.Table(
    "maintenance_audit_log", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("audit_day", sa.String(10), nullable=False),
    sa.Column("table_name", sa.String(128), nullable=False),
    sa.Column("clickhouse_rows", sa.BigInteger),
    sa.Column("iceberg_rows", sa.BigInteger),
    sa.Column("clickhouse_quantity", sa.String(64)),
    sa.Column("iceberg_quantity", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)  # fmt: skip


@dataclass(frozen=True)
class WatermarkRow:
    table_name: str
    watermark_us: int
    snapshot_id: int | None
    rows_last: int
    rows_total: int
    last_success_at: float | None
    last_duration_s: float | None
    failures_total: int
    last_error: str | None


@dataclass(frozen=True)
class AuditRow:
    run_id: str
    audit_day: str
    table_name: str
    clickhouse_rows: int | None
    iceberg_rows: int | None
    clickhouse_quantity: str | None
    iceberg_quantity: str | None
    status: str
    detail: str


def _dead_here(owner: str) -> bool:
    """Whether ``owner`` (``host-pid-suffix``, see offload.run.new_run_id) is a process of this host that
    is gone: its lock is taken over at once instead of waiting for the expiry."""
    parts = owner.rsplit("-", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class StateStore:
    """Tables are created on first use; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = sa.create_engine(url, future=True)
        _META.create_all(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    # -- watermark mirror ---------------------------------------------------------------------------

    def watermarks(self) -> list[WatermarkRow]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(WATERMARKS).order_by(WATERMARKS.c.table_name)).mappings().all()
        return [WatermarkRow(**{k: r[k] for k in WatermarkRow.__dataclass_fields__}) for r in rows]

    def watermark(self, table: str) -> WatermarkRow | None:
        return next((w for w in self.watermarks() if w.table_name == table), None)

    def record_success(
        self, table: str, watermark_us: int, snapshot_id: int | None, rows: int, duration_s: float
    ) -> None:
        now = time.time()
        with self._engine.begin() as conn:
            updated = conn.execute(
                WATERMARKS.update()
                .where(WATERMARKS.c.table_name == table)
                .values(
                    watermark_us=watermark_us,
                    snapshot_id=snapshot_id,
                    rows_last=rows,
                    rows_total=WATERMARKS.c.rows_total + rows,
                    last_success_at=now,
                    last_duration_s=duration_s,
                    last_error=None,
                    updated_at=now,
                )
            ).rowcount
            if not updated:
                conn.execute(WATERMARKS.insert().values(
                    table_name=table, watermark_us=watermark_us, snapshot_id=snapshot_id, rows_last=rows,
                    rows_total=rows, last_success_at=now, last_duration_s=duration_s, failures_total=0,
                    updated_at=now,
                ))  # fmt: skip

    def repair(self, table: str, watermark_us: int, snapshot_id: int | None) -> None:
        """Align the mirror with Iceberg after a crash between the commit and the mirror update."""
        now = time.time()
        with self._engine.begin() as conn:
            updated = conn.execute(
                WATERMARKS.update()
                .where(WATERMARKS.c.table_name == table)
                .values(watermark_us=watermark_us, snapshot_id=snapshot_id, updated_at=now)
            ).rowcount
            if not updated:
                conn.execute(WATERMARKS.insert().values(
                    table_name=table, watermark_us=watermark_us, snapshot_id=snapshot_id, rows_last=0,
                    rows_total=0, failures_total=0, updated_at=now,
                ))  # fmt: skip

    def record_failure(self, table: str, error: str) -> None:
        now = time.time()
        with self._engine.begin() as conn:
            updated = conn.execute(
                WATERMARKS.update()
                .where(WATERMARKS.c.table_name == table)
                .values(failures_total=WATERMARKS.c.failures_total + 1, last_error=error[:2000], updated_at=now)
            ).rowcount
            if not updated:
                conn.execute(WATERMARKS.insert().values(
                    table_name=table, watermark_us=0, rows_last=0, rows_total=0, failures_total=1,
                    last_error=error[:2000], updated_at=now,
                ))  # fmt: skip

    # -- locks ---------------------------------------------------------------------------------------

    @contextmanager
    def lock(self, table: str, owner: str, ttl_s: float) -> Iterator[None]:
        """Hold ``table`` for ``owner``; a lock past its expiry (a crashed run) is taken over."""
        now = time.time()
        try:
            with self._engine.begin() as conn:
                conn.execute(LOCKS.delete().where(LOCKS.c.table_name == table, LOCKS.c.expires_at < now))
                holder = conn.execute(sa.select(LOCKS.c.owner).where(LOCKS.c.table_name == table)).scalar()
                if holder is not None and _dead_here(str(holder)):
                    conn.execute(LOCKS.delete().where(LOCKS.c.table_name == table, LOCKS.c.owner == holder))
                conn.execute(LOCKS.insert().values(table_name=table, owner=owner, expires_at=now + ttl_s))
        except IntegrityError as exc:
            holder = self.lock_holder(table)
            raise TableBusyError(f"{table} is being offloaded or maintained by {holder}") from exc
        try:
            yield
        finally:
            with self._engine.begin() as conn:
                conn.execute(LOCKS.delete().where(LOCKS.c.table_name == table, LOCKS.c.owner == owner))

    def lock_holder(self, table: str) -> str | None:
        with self._engine.connect() as conn:
            owner = conn.execute(sa.select(LOCKS.c.owner).where(LOCKS.c.table_name == table)).scalar()
        return str(owner) if owner is not None else None

    # -- audit log -----------------------------------------------------------------------------------

    def record_audit(self, row: AuditRow) -> None:
        with self._engine.begin() as conn:
            conn.execute(AUDIT.insert().values(**row.__dict__, created_at=time.time()))

    def latest_audit(self) -> list[AuditRow]:
        """Rows of the most recent audit run."""
        with self._engine.connect() as conn:
            run = conn.execute(sa.select(AUDIT.c.run_id).order_by(AUDIT.c.id.desc()).limit(1)).scalar()
            if run is None:
                return []
            rows = conn.execute(sa.select(AUDIT).where(AUDIT.c.run_id == run).order_by(AUDIT.c.id)).mappings().all()
        return [AuditRow(**{k: r[k] for k in AuditRow.__dataclass_fields__}) for r in rows]

    def latest_audit_time(self) -> float | None:
        with self._engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(AUDIT.c.created_at))).scalar()
        return float(value) if value is not None else None
