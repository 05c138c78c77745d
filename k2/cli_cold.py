"""``k2 offload run`` and ``k2 flows serve``: the cold tier from the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from k2.settings import Settings

__all__ = ["add_commands"]


def _cmd_offload_run(settings: Settings, args: argparse.Namespace) -> int:
    from feed_handlers.instruments import EXCHANGES  # noqa: PLC0415 - keep `k2 --help` fast
    from offload.run import offload_all  # noqa: PLC0415
    from offload.tables import select_tables  # noqa: PLC0415

    if args.engine:
        settings = settings.model_copy(update={"offload_engine": args.engine})
    try:
        specs = select_tables(tuple(EXCHANGES), args.tables)
    except ValueError as exc:
        print(f"k2: error: {exc}", file=sys.stderr)
        return 2
    report = offload_all(settings, specs, dry_run=args.dry_run)
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_flows_serve(settings: Settings, _args: argparse.Namespace) -> int:
    from flows.serve import serve  # noqa: PLC0415 - imports Prefect

    serve(settings)
    return 0


def add_commands(sub: Any) -> None:
    offload = sub.add_parser("offload", help="copy ClickHouse tables to the Iceberg cold tier")
    run = offload.add_subparsers(dest="offload_command", required=True).add_parser(
        "run", help="offload every table (or --tables) up to now minus the safety buffer; exit 1 on failure"
    )
    run.add_argument("--tables", nargs="+", metavar="TABLE", help="e.g. silver_trades gold_ohlcv_1m")
    run.add_argument("--engine", choices=["pyiceberg", "spark"], help="default: K2_OFFLOAD_ENGINE")
    run.add_argument("--dry-run", action="store_true", help="plan and count the windows, commit nothing")
    run.set_defaults(func=_cmd_offload_run)
    flows = sub.add_parser("flows", help="Prefect deployments of the offload and maintenance flows")
    serve = flows.add_subparsers(dest="flows_command", required=True).add_parser(
        "serve", help="register iceberg-offload-15min and iceberg-maintenance-daily and run them when due"
    )
    serve.set_defaults(func=_cmd_flows_serve)
