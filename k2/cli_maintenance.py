"""``k2 maintenance run``: compaction, snapshot expiry, orphan cleanup and the audit from the command line."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

from k2.settings import Settings

__all__ = ["add_commands"]

_ACTIONS = ("compact", "expire", "orphans", "audit")


def _cmd_maintenance_run(settings: Settings, args: argparse.Namespace) -> int:
    from feed_handlers.instruments import EXCHANGES  # noqa: PLC0415 - keep `k2 --help` fast
    from offload.maintenance import ACTIONS, MaintenanceOptions, run_maintenance  # noqa: PLC0415
    from offload.run import make_engine, new_run_id  # noqa: PLC0415
    from offload.tables import select_tables  # noqa: PLC0415

    try:
        specs = select_tables(tuple(EXCHANGES), args.tables)
    except ValueError as exc:
        print(f"k2: error: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(settings, args.engine)
    try:
        actions = tuple(a for a in ACTIONS if a in (args.action or ACTIONS))
        options = MaintenanceOptions(day=args.day)
        report = run_maintenance(settings, specs, actions, run_id=new_run_id(), engine=engine, options=options)
    finally:
        engine.close()
    print(report.summary())
    return 0 if report.ok else 1


def add_commands(sub: Any) -> None:
    maintenance = sub.add_parser("maintenance", help="compact, expire and audit the Iceberg cold tier")
    run = maintenance.add_subparsers(dest="maintenance_command", required=True).add_parser(
        "run", help="compact, expire, remove orphans, audit (or --action ...); exit 1 on a failure or finding"
    )
    run.add_argument("--action", action="append", choices=_ACTIONS,
                     help="repeatable; default: all, in the order compact, expire, orphans, audit")  # fmt: skip
    run.add_argument("--tables", nargs="+", metavar="TABLE", help="e.g. silver_trades gold_ohlcv_1m")
    run.add_argument("--engine", choices=["pyiceberg", "spark"], help="default: K2_OFFLOAD_ENGINE")
    run.add_argument("--day", type=date.fromisoformat, help="audit day YYYY-MM-DD (UTC; default: yesterday)")
    run.set_defaults(func=_cmd_maintenance_run)
