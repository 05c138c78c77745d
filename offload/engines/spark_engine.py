"""The Spark engine: pyspark + the Iceberg Spark runtime over the same catalog pyiceberg uses.

One offload commit is one Iceberg commit, as with pyiceberg:

- no ``replace`` (bronze, silver, an empty gold window): ``DataFrameWriterV2.append()`` with the
  properties as ``snapshot-property.*`` write options; an empty batch still commits an (empty) append
  snapshot, so the watermark advances over windows without rows.
- ``replace`` (gold corrections): one ``MERGE INTO ... ON <key> WHEN MATCHED THEN UPDATE SET * WHEN NOT
  MATCHED THEN INSERT *`` run inside ``org.apache.iceberg.spark.CommitMetadata.withCommitProperties``
  (called back from the JVM through py4j), so the rows it replaces, the rows it adds and the watermark
  become visible in one snapshot. ``replace`` must name exactly the batch's keys (what
  ``offload.plan.replace_filter`` builds); anything else is refused rather than half applied.

There is no moment where replaced rows are gone and their replacements not yet in: a crash before the
commit leaves the previous watermark and the rerun reads the same window again; after it, both are there.

The batch reaches Spark as a staging Parquet file written by pyarrow, so decimals, µs timestamps, lists
and maps keep their Arrow types (Spark reads decimal(38,18) as decimal(38,18), never as double).

Jars come from ``settings.spark_jars`` (built offline by ``../shared/tools/spark-offline/build-jars``);
when it is empty, ``spark.jars.packages`` fetches the Iceberg runtime and drivers from Maven Central.
Maintenance (``compact``, ``expire``, ``remove_orphans``) uses Iceberg's Spark actions and procedures;
``offload.maintenance`` picks them up through its ``Compacts``/``Expires``/``RemovesOrphans`` protocols.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In, Or, Reference
from pyiceberg.table import Table

from k2.settings import Settings
from offload.catalog import CATALOG_NAME, TARGET_FILE_BYTES, open_catalog
from offload.errors import CommitError, MaintenanceError

__all__ = ["ICEBERG_VERSION", "SparkEngine", "spark_conf"]

ICEBERG_VERSION = "1.10.2"
_RUNTIME = f"org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:{ICEBERG_VERSION}"
#: Maven coordinates used when ``spark_jars`` is empty (production images have Maven Central)
_PACKAGES = {
    "sqlite": "org.xerial:sqlite-jdbc:3.46.1.3",
    "postgresql": "org.postgresql:postgresql:42.7.4",
    "rest": f"org.apache.iceberg:iceberg-aws-bundle:{ICEBERG_VERSION}",
}


def _jdbc(catalog_uri: str) -> tuple[str, dict[str, str]]:
    """SQLAlchemy URL -> (JDBC URL, extra catalog properties): sqlite:///p and postgresql[+driver]://..."""
    parts = urlsplit(catalog_uri)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "sqlite":
        return f"jdbc:sqlite:{unquote(parts.path)}", {}
    if scheme in {"postgresql", "postgres"}:
        host = parts.hostname or "127.0.0.1"
        port = f":{parts.port}" if parts.port else ""
        extra = {"jdbc.user": unquote(parts.username or "")}
        if parts.password:
            extra["jdbc.password"] = unquote(parts.password)
        query = f"?{parts.query}" if parts.query else ""
        return f"jdbc:postgresql://{host}{port}{parts.path}{query}", extra
    raise ValueError(f"spark engine: unsupported catalog URI scheme {parts.scheme!r} (sqlite or postgresql)")


def spark_conf(settings: Settings, scratch: Path) -> dict[str, str]:
    """The SparkSession settings: a small local driver and Iceberg catalog ``k2`` over the settings' catalog."""
    cat = f"spark.sql.catalog.{CATALOG_NAME}"
    conf = {
        "spark.master": settings.spark_master,
        "spark.app.name": "k2-offload",
        "spark.driver.memory": "1g",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": (scratch / "spark-warehouse").as_uri(),
        "spark.local.dir": str(scratch / "spark-local"),
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        cat: "org.apache.iceberg.spark.SparkCatalog",
        f"{cat}.warehouse": settings.warehouse_uri,
        # pyiceberg commits to the same tables (offloads, maintenance): Spark must never plan on a stale copy
        f"{cat}.cache-enabled": "false",
    }
    packages = [_RUNTIME]
    if settings.iceberg_catalog == "rest":
        conf |= {f"{cat}.type": "rest", f"{cat}.uri": settings.catalog_uri}
        if settings.iceberg_rest_credential.get_secret_value():
            conf[f"{cat}.credential"] = settings.iceberg_rest_credential.get_secret_value()
            conf[f"{cat}.oauth2-server-uri"] = f"{settings.catalog_uri.rstrip('/')}/v1/oauth/tokens"
        if settings.iceberg_s3_endpoint or settings.warehouse_uri.startswith("s3"):
            conf |= {
                f"{cat}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
                f"{cat}.client.region": settings.iceberg_s3_region,
                f"{cat}.s3.path-style-access": "true",
            }
            if settings.iceberg_s3_endpoint:
                conf[f"{cat}.s3.endpoint"] = settings.iceberg_s3_endpoint
            if settings.iceberg_s3_access_key_id:
                conf[f"{cat}.s3.access-key-id"] = settings.iceberg_s3_access_key_id
                conf[f"{cat}.s3.secret-access-key"] = settings.iceberg_s3_secret_access_key.get_secret_value()
        packages.append(_PACKAGES["rest"])
    else:
        url, extra = _jdbc(settings.catalog_uri)
        conf |= {f"{cat}.type": "jdbc", f"{cat}.uri": url} | {f"{cat}.{k}": v for k, v in extra.items()}
        # offload.catalog.open_catalog (pyiceberg) creates the catalog tables. Iceberg's own check leaves a
        # DatabaseMetaData result set open, and on SQLite that pins a read lock for the session's lifetime:
        # every later pyiceberg commit then fails with "database is locked".
        conf[f"{cat}.jdbc.init-catalog-tables"] = "false"
        packages.append(_PACKAGES["sqlite" if url.startswith("jdbc:sqlite") else "postgresql"])
    if settings.spark_jars:
        conf["spark.jars"] = settings.spark_jars
    else:
        conf["spark.jars.packages"] = ",".join(packages)
    if settings.spark_java_library_path:
        conf["spark.driver.extraJavaOptions"] = f"-Djava.library.path={settings.spark_java_library_path}"
    return conf


class _Callable:
    """A ``java.util.concurrent.Callable`` implemented in Python, for ``CommitMetadata.withCommitProperties``."""

    def __init__(self, spark: Any, sql: str) -> None:
        self._spark, self._sql = spark, sql

    def call(self) -> None:
        # py4j runs this on the JVM thread that called us, so Iceberg's thread-local properties apply
        self._spark.sql(self._sql)

    class Java:
        implements = ("java.util.concurrent.Callable",)


class SparkEngine:
    """Offload commits and maintenance through one lazily started, small local SparkSession."""

    name = "spark"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._scratch = Path(tempfile.mkdtemp(prefix="k2-spark-"))
        self._lock = threading.Lock()
        self._spark: Any = None

    @property
    def spark(self) -> Any:
        """The SparkSession, started on first use (a JVM only when the engine actually works)."""
        with self._lock:
            if self._spark is None:
                from pyspark.java_gateway import ensure_callback_server_started  # noqa: PLC0415
                from pyspark.sql import SparkSession  # noqa: PLC0415 - pyspark only when Spark is used

                os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
                open_catalog(self._settings)  # the catalog's tables exist before Spark opens it (see spark_conf)
                builder = SparkSession.builder
                for key, value in spark_conf(self._settings, self._scratch).items():
                    builder = builder.config(key, value)
                spark = builder.getOrCreate()
                spark.sparkContext.setLogLevel("WARN")
                ensure_callback_server_started(spark.sparkContext._gateway)  # type: ignore[no-untyped-call]
                self._spark = spark
            return self._spark

    # -- offload ---------------------------------------------------------------------------------------

    def commit(
        self, table: Table, batch: pa.Table, properties: dict[str, str], replace: BooleanExpression | None
    ) -> int | None:
        target = _spark_name(table)
        staging = self._scratch / f"staging-{uuid.uuid4().hex}.parquet"
        view = f"k2_staging_{uuid.uuid4().hex}"
        try:
            pq.write_table(batch, staging)
            spark = self.spark
            frame = spark.read.parquet(staging.as_uri())
            if replace is None:
                writer = frame.writeTo(target)
                for key, value in properties.items():
                    writer = writer.option(f"snapshot-property.{key}", value)
                writer.append()
            else:
                keys = _replaced_keys(replace, batch)
                frame.createOrReplaceTempView(view)
                on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
                merge = (
                    f"MERGE INTO {target} t USING {view} s ON {on} "
                    "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
                )
                self._with_commit_properties(properties, merge)
        except CommitError:
            raise
        except Exception as exc:  # Spark/py4j/IO errors: an Iceberg commit is atomic, nothing was committed
            raise CommitError(f"{'.'.join(table.name())}: spark commit failed: {_short(exc)}") from exc
        finally:
            staging.unlink(missing_ok=True)
            if self._spark is not None:
                self._spark.catalog.dropTempView(view)
        return _committed_snapshot(table, properties)

    def _with_commit_properties(self, properties: dict[str, str], sql: str) -> None:
        jvm = self.spark.sparkContext._jvm
        props = jvm.java.util.HashMap()
        for key, value in properties.items():
            props.put(key, value)
        exception = jvm.java.lang.Class.forName("java.lang.Exception")
        jvm.org.apache.iceberg.spark.CommitMetadata.withCommitProperties(props, _Callable(self.spark, sql), exception)

    # -- maintenance (see offload.maintenance: Compacts, Expires, RemovesOrphans) -----------------------

    def compact(self, table_id: str, snapshot_properties: dict[str, str]) -> str:
        """Bin-pack small files toward 128 MB; the rewrite's snapshot carries ``snapshot_properties``.

        The ``rewrite_data_files`` procedure takes no snapshot properties, so this calls the action it wraps.
        """
        summary = self._maintain(table_id, "compact", lambda: self._rewrite(table_id, snapshot_properties))
        return _describe(summary)

    def _rewrite(self, table_id: str, snapshot_properties: dict[str, str]) -> dict[str, int]:
        spark = self.spark
        jvm = spark.sparkContext._jvm
        jtable = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, self._name(table_id))
        action = (
            jvm.org.apache.iceberg.spark.actions.SparkActions.get(spark._jsparkSession)
            .rewriteDataFiles(jtable)
            .binPack()
            .option("target-file-size-bytes", str(TARGET_FILE_BYTES))
            .option("min-input-files", "2")
        )
        for key, value in snapshot_properties.items():
            action = action.snapshotProperty(key, value)
        result = action.execute()
        return {
            "rewritten_files": int(result.rewrittenDataFilesCount()),
            "added_files": int(result.addedDataFilesCount()),
            "rewritten_bytes": int(result.rewrittenBytesCount()),
        }

    def expire(self, table_id: str, older_than: datetime, retain_last: int) -> str:
        """``expire_snapshots``: snapshots older than ``older_than`` beyond the newest ``retain_last`` go,
        with the files only they reached."""
        sql = (
            f"CALL {CATALOG_NAME}.system.expire_snapshots(table => '{_quoted(table_id)}', "
            f"older_than => TIMESTAMP '{_utc(older_than)}', retain_last => {int(retain_last)})"
        )
        return _describe(self._maintain(table_id, "expire", lambda: self._call(sql)))

    def remove_orphans(self, table_id: str, older_than: datetime) -> str:
        """Delete files under the table location nothing references, last modified before ``older_than``.

        The ``remove_orphan_files`` procedure refuses cut-offs under 24 hours; the caller owns that policy
        (``offload.maintenance`` defaults to one day), so this calls the action the procedure wraps.
        """

        def run() -> dict[str, int]:
            spark = self.spark
            jvm = spark.sparkContext._jvm
            jtable = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(
                spark._jsparkSession, self._name(table_id)
            )
            cutoff_ms = int(datetime.fromisoformat(_utc(older_than)).replace(tzinfo=UTC).timestamp() * 1000)
            result = (
                jvm.org.apache.iceberg.spark.actions.SparkActions.get(spark._jsparkSession)
                .deleteOrphanFiles(jtable)
                .olderThan(cutoff_ms)
                .execute()
            )
            iterables = jvm.org.apache.iceberg.relocated.com.google.common.collect.Iterables
            return {"orphan_files_deleted": int(iterables.size(result.orphanFileLocations()))}

        return _describe(self._maintain(table_id, "orphans", run))

    def _call(self, sql: str) -> dict[str, int]:
        """A procedure's one-row result of counts (read over py4j: pyspark's collect() leaks its socket)."""
        frame = self.spark._jsparkSession.sql(sql)
        names = list(frame.schema().fieldNames())
        row = frame.collectAsList().get(0)
        return {str(name): int(row.getLong(i)) for i, name in enumerate(names)}

    def _maintain(self, table_id: str, action: str, run: Any) -> dict[str, int]:
        try:
            result: dict[str, int] = run()
        except Exception as exc:  # Spark/py4j/IO: this table's action failed
            raise MaintenanceError(f"{table_id}: spark {action} failed: {_short(exc)}") from exc
        return result

    def _name(self, table_id: str) -> str:
        return f"{CATALOG_NAME}.{table_id}"

    def close(self) -> None:
        with self._lock:
            if self._spark is not None:
                self._spark.stop()
                self._spark = None
        shutil.rmtree(self._scratch, ignore_errors=True)


def _spark_name(table: Table) -> str:
    return ".".join([CATALOG_NAME, *(f"`{part}`" for part in table.name())])


def _quoted(table_id: str) -> str:
    if "'" in table_id:
        raise ValueError(f"bad table id {table_id!r}")
    return table_id


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("maintenance cut-offs must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _describe(summary: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in summary.items())


def _short(exc: BaseException) -> str:
    """The first line of a (possibly Java) error: py4j messages carry the whole JVM stack."""
    text = str(exc).strip()
    java = getattr(exc, "java_exception", None)
    if java is not None:
        text = str(java.toString())
    return text.splitlines()[0] if text else type(exc).__name__


def _terms(expr: BooleanExpression) -> list[BooleanExpression]:
    if isinstance(expr, And):
        return [*_terms(expr.left), *_terms(expr.right)]
    return [expr]


def _disjuncts(expr: BooleanExpression) -> list[BooleanExpression]:
    if isinstance(expr, Or):
        return [*_disjuncts(expr.left), *_disjuncts(expr.right)]
    return [expr]


def _replaced_keys(replace: BooleanExpression, batch: pa.Table) -> tuple[str, ...]:
    """The key columns of ``replace`` after checking it selects exactly the batch's keys.

    ``replace`` is an OR of ANDs of ``col == v`` / ``col IN (...)`` (``offload.plan.replace_filter``); the
    MERGE replaces by key equality with the batch, so any other filter is refused.
    """
    described: set[tuple[Any, ...]] = set()
    columns: tuple[str, ...] | None = None
    for part in _disjuncts(replace):
        values: dict[str, set[Any]] = {}
        for term in _terms(part):
            if isinstance(term, EqualTo) and isinstance(term.term, Reference):
                values[term.term.name] = {term.literal.value}
            elif isinstance(term, In) and isinstance(term.term, Reference):
                values[term.term.name] = {lit.value for lit in term.literals}
            else:
                raise CommitError(f"spark engine: unsupported replace filter term {term!r}")
        names = tuple(sorted(values))
        if columns is not None and names != columns:
            raise CommitError(f"spark engine: replace filter mixes key columns {columns} and {names}")
        columns = names
        combos: list[tuple[Any, ...]] = [()]
        for name in names:
            combos = [(*c, v) for c in combos for v in values[name]]
        described |= set(combos)
    if columns is None:
        raise CommitError("spark engine: empty replace filter")
    keyed = []
    for name in columns:
        column = batch.column(name)
        keyed.append(column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column)
    in_batch = set(zip(*(c.to_pylist() for c in keyed), strict=True))
    if in_batch != described:
        raise CommitError(
            f"spark engine: replace filter names {len(described)} keys, the batch holds {len(in_batch)} others"
        )
    return columns


def _committed_snapshot(table: Table, properties: dict[str, str]) -> int | None:
    """The snapshot Spark just committed, read back through pyiceberg, checked to carry ``properties``."""
    table.refresh()
    snapshot = table.current_snapshot()
    summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
    missing = {k: v for k, v in properties.items() if summary.get(k) != v}
    if snapshot is None or missing:
        # cannot happen while the table lock holds off other writers; if it does, say so rather than guess
        raise CommitError(f"{'.'.join(table.name())}: the current snapshot after Spark's commit lacks {missing}")
    return snapshot.snapshot_id
