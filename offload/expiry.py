"""Snapshot expiry that deletes what it unreferences, and orphan-file cleanup (the pyiceberg path).

pyiceberg's ``expire_snapshots`` edits table metadata only. Here the files each snapshot reaches are
collected first: its manifest list, its manifests, and the data/delete files live in them. After the
metadata commit, the files that only expired snapshots reached are deleted; anything a retained
snapshot still reaches stays. A crash between the commit and the deletes leaves orphans, which the
orphan cleanup removes later.

Orphans are files under the table location that nothing in the metadata reaches (any snapshot's files,
deleted manifest entries included; the metadata log; statistics files) and that are older than a minimum
age, so files an in-flight commit is writing are never taken.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pyarrow.fs import FileSelector, FileType
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.manifest import ManifestFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from offload.catalog import committed_watermark
from offload.errors import MaintenanceError

__all__ = ["ExpiryStats", "OrphanStats", "expire_snapshots", "reachable_files", "remove_orphan_files"]


@dataclass(frozen=True)
class ExpiryStats:
    snapshots_expired: int = 0
    snapshots_kept: int = 0
    files_deleted: tuple[str, ...] = ()

    def describe(self) -> str:
        return (f"{self.snapshots_expired} snapshot(s) expired, {self.snapshots_kept} kept, "
                f"{len(self.files_deleted)} unreachable file(s) deleted")  # fmt: skip


@dataclass(frozen=True)
class OrphanStats:
    files_listed: int = 0
    files_deleted: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{len(self.files_deleted)} orphan file(s) deleted of {self.files_listed} listed"


def norm(path: str) -> str:
    """A location as the file system lists it: ``/abs/path`` locally, ``bucket/key`` on S3."""
    return PyArrowFileIO.parse_location(path)[2]


class _Reach:
    """Files reached by snapshots; each manifest is read once however many snapshots share it."""

    def __init__(self, io: FileIO, include_deleted: bool) -> None:
        self.io = io
        self.include_deleted = include_deleted
        self._manifests: dict[str, frozenset[str]] = {}

    def _manifest(self, manifest: ManifestFile) -> frozenset[str]:
        if manifest.manifest_path not in self._manifests:
            entries = manifest.fetch_manifest_entry(self.io, discard_deleted=not self.include_deleted)
            self._manifests[manifest.manifest_path] = frozenset(norm(e.data_file.file_path) for e in entries)
        return self._manifests[manifest.manifest_path]

    def of(self, snapshots: Iterable[Snapshot]) -> set[str]:
        files: set[str] = set()
        for snapshot in snapshots:
            files.add(norm(snapshot.manifest_list))
            for manifest in snapshot.manifests(self.io):
                files.add(norm(manifest.manifest_path))
                files |= self._manifest(manifest)
        return files


def reachable_files(table: Table, *, live_only: bool = False) -> set[str]:
    """Every file the table's metadata reaches: all snapshots, metadata log, statistics (normalized).

    ``live_only`` leaves out files only a deleted manifest entry names (the orphan cleanup keeps those).
    """
    meta = table.metadata
    files = _Reach(table.io, include_deleted=not live_only).of(meta.snapshots)
    files |= {norm(entry.metadata_file) for entry in meta.metadata_log}
    files.add(norm(table.metadata_location))
    files |= {norm(s.statistics_path) for s in meta.statistics}
    files |= {norm(s.statistics_path) for s in meta.partition_statistics}
    return files


def _to_expire(table: Table, older_than: datetime, retain_last: int) -> list[int]:
    meta = table.metadata
    newest_first = sorted(meta.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
    keep = {s.snapshot_id for s in newest_first[: max(retain_last, 1)]}
    keep |= {ref.snapshot_id for ref in meta.refs.values()}  # branch heads and tags
    watermark_snapshot = committed_watermark(table)[1]
    if watermark_snapshot is not None:  # the offload resumes from it: never expire it
        keep.add(watermark_snapshot)
    cutoff_ms = int(older_than.timestamp() * 1000)
    return [s.snapshot_id for s in meta.snapshots if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep]


def expire_snapshots(table: Table, older_than: datetime, retain_last: int) -> ExpiryStats:
    """Expire snapshots older than ``older_than`` beyond the newest ``retain_last``; delete their files."""
    expired_ids = _to_expire(table, older_than, retain_last)
    if not expired_ids:
        return ExpiryStats(0, len(table.metadata.snapshots))
    expired = set(expired_ids)
    reach = _Reach(table.io, include_deleted=False)
    before = reach.of(s for s in table.metadata.snapshots if s.snapshot_id in expired)
    kept = reach.of(s for s in table.metadata.snapshots if s.snapshot_id not in expired)
    table.maintenance.expire_snapshots().by_ids(expired_ids).commit()
    table.refresh()
    left = {s.snapshot_id for s in table.metadata.snapshots}
    if left & expired:
        raise MaintenanceError(f"{'.'.join(table.name())}: snapshots {sorted(left & expired)} were not expired")
    # a snapshot committed meanwhile can only reach files of the retained ones or new files
    unreachable = sorted(before - kept - reach.of(s for s in table.metadata.snapshots))
    _delete(table, unreachable)
    return ExpiryStats(len(expired_ids), len(left), tuple(unreachable))


def _delete(table: Table, paths: Iterable[str]) -> None:
    scheme = PyArrowFileIO.parse_location(table.location())[0]
    for path in paths:  # normalized paths lost their scheme (file:///abs, s3://bucket/key)
        table.io.delete(f"{scheme}://{path}")


def remove_orphan_files(table: Table, older_than: datetime, *, dry_run: bool = False) -> OrphanStats:
    """Delete files under the table location that no metadata reaches and last modified before ``older_than``."""
    if not isinstance(table.io, PyArrowFileIO):
        raise MaintenanceError(f"orphan cleanup lists files through pyarrow; the table uses {type(table.io).__name__}")
    scheme, netloc, root = PyArrowFileIO.parse_location(table.location())
    fs = table.io.fs_by_scheme(scheme, netloc)
    listed = [i for i in fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
              if i.type == FileType.File]  # fmt: skip
    reachable = reachable_files(table)  # read after listing: a file committed meanwhile counts as reachable
    cutoff_ns = int(older_than.timestamp() * 1e9)
    orphans = sorted(
        i.path for i in listed
        if i.path not in reachable and i.mtime_ns is not None and i.mtime_ns < cutoff_ns
    )  # fmt: skip
    if not dry_run:
        _delete(table, orphans)
    return OrphanStats(len(listed), tuple(orphans))
