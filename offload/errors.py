"""Offload errors and their policy.

OffloadError                 base; ``retriable`` says whether the run may try the table again
├── TableBusyError           another run holds the table's lock (not retried: that run is working)
├── PlanError                the source table or the cold table cannot be read (retriable)
├── CommitError              the engine failed to write or commit (retriable; nothing was committed)
└── MaintenanceError         compaction, expiry or orphan cleanup failed for one table
"""

from __future__ import annotations

__all__ = ["CommitError", "MaintenanceError", "OffloadError", "PlanError", "TableBusyError"]


class OffloadError(Exception):
    retriable = True


class TableBusyError(OffloadError):
    retriable = False


class PlanError(OffloadError):
    pass


class CommitError(OffloadError):
    pass


class MaintenanceError(OffloadError):
    pass
