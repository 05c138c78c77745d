"""The ``k2`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feed_handlers.app import run_handler
from feed_handlers.instruments import EXCHANGES, load_instruments
from feed_handlers.normalize import normalize
from feed_handlers.replay import run_replay
from k2 import chclient
from k2.cli_cold import add_commands as add_cold_commands
from k2.cli_maintenance import add_commands as add_maintenance_commands
from k2.embedded.components import Feeds, exchanges_reachable
from k2.embedded.stack import Stack, status
from k2.errors import ConfigError, K2Error
from k2.gold_repair import repair_gold
from k2.logs import configure as configure_logs
from k2.migrations import default_sql_dir, migrate
from k2.settings import Settings, load_settings

__all__ = ["main"]

DEFAULT_CAPTURES = Path(__file__).resolve().parent.parent / "captures"


def _print_endpoints(state: dict[str, Any]) -> None:
    endpoints = state["endpoints"]
    print(f"k2 is up (data dir {state['data_dir']})")
    print(f"  kafka       {endpoints['kafka']}")
    print(f"  clickhouse  {endpoints['clickhouse']}   try: k2 sql 'SELECT * FROM k2.ohlcv_1m LIMIT 5'")
    if "prefect" in endpoints:
        print(f"  prefect UI  {endpoints['prefect']}   offloads every 15 min; run one now from Deployments")
    sys.stdout.flush()


def _feeds(settings: Settings, args: argparse.Namespace) -> Feeds:
    mode = "replay" if args.replay and args.feeds == "auto" else args.feeds
    replay_dir = Path(args.replay) if args.replay else DEFAULT_CAPTURES
    if mode == "auto":
        reachable = exchanges_reachable(load_instruments(settings.instruments))
        mode = "live" if reachable else "replay"
        if not reachable:
            print(f"k2: exchanges unreachable (no internet?): replaying {replay_dir}", file=sys.stderr)
    return Feeds(mode, replay_dir if mode == "replay" else None, args.speed, not args.no_loop)


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    feeds = _feeds(settings, args)
    if feeds.replay_dir is not None and (feeds.replay_dir / "instruments.yaml").exists():
        # captures carry their own symbols; the handlers (children) read K2_INSTRUMENTS too
        os.environ["K2_INSTRUMENTS"] = str((feeds.replay_dir / "instruments.yaml").resolve())
        settings = settings.model_copy(update={"instruments": feeds.replay_dir / "instruments.yaml"})
    stack = Stack(settings, feeds, flows=not args.no_flows)
    if args.detach:
        _print_endpoints(stack.up_detached())
        return 0
    return stack.up(on_ready=_print_endpoints)


def _cmd_down(settings: Settings, _args: argparse.Namespace) -> int:
    stopped = Stack(settings).down()
    print("stopped: " + ", ".join(stopped) if stopped else "k2 is not running")
    return 0


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    report = status(settings)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"k2 {'running' if report['running'] else 'not running'} (data dir {report['data_dir']})")
        for name, comp in report["components"].items():
            print(f"  {name:<16} {comp['health']:<9} {comp['endpoint']}  pid {comp['pid'] or '-'}")
    return 0 if report["healthy"] else 1


def _cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    client = chclient.connect(settings)
    sys.stdout.buffer.write(chclient.raw_query(client, args.query, fmt=args.format))
    sys.stdout.flush()
    return 0


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    client = chclient.connect(settings)
    sql_dir = args.sql_dir or default_sql_dir()
    applied = migrate(client, sql_dir, {"KAFKA_BROKER_LIST": settings.kafka_brokers_for_clickhouse})
    print(f"applied {len(applied)} migrations" + "".join(f"\n  {name}" for name in applied))
    return 0


def _cmd_repair_gold(settings: Settings, args: argparse.Namespace) -> int:
    client = chclient.connect(settings)
    since = args.since if args.since.tzinfo else args.since.replace(tzinfo=UTC)
    since_ns = int(since.timestamp()) * 1_000_000_000 + since.microsecond * 1000

    def execute(sql: str, fmt: str, params: Mapping[str, str]) -> bytes:
        return chclient.raw_query(client, sql, fmt, params)

    found = repair_gold(execute, {}, since_ns)
    print(f"recomputed the gold candles of {found} silver rows inserted since {since.isoformat()}")
    return 0


def _cmd_handler(settings: Settings, args: argparse.Namespace) -> int:
    configure_logs(json=True)
    asyncio.run(
        run_handler(
            args.exchange,
            settings,
            ws_url=args.ws_url,
            bootstrap=args.bootstrap,
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port,
            backfill=args.backfill or None,
            rest_url=args.rest_url,
        )
    )
    return 0


def _cmd_normalize(settings: Settings, args: argparse.Namespace) -> int:
    config = load_instruments(settings.instruments).exchanges.get(args.exchange)
    if config is None:
        raise ConfigError(f"{settings.instruments}: no entry for exchange {args.exchange!r}")
    report = normalize(args.exchange, config, sys.stdin.buffer, sys.stdout.buffer)
    print(report, file=sys.stderr)
    return 0


def _cmd_exporter(settings: Settings, args: argparse.Namespace) -> int:
    from k2.exporter import serve  # noqa: PLC0415 - only this command needs it

    overrides = {"exporter_host": args.host, "exporter_port": args.port}
    serve(settings.model_copy(update={k: v for k, v in overrides.items() if v is not None}))
    return 0


def _speed(text: str) -> float | None:
    return None if text == "max" else float(text)


def _cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    ports = dict(p.split("=", 1) for p in args.ports.split(",")) if args.ports else {}
    configure_logs(json=False)

    async def serve() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        replay = asyncio.create_task(
            run_replay(Path(args.dir), speed=_speed(args.speed), loop=args.loop, host=args.host,
                       ports={k: int(v) for k, v in ports.items()})
        )  # fmt: skip
        await asyncio.wait({replay, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        replay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replay

    asyncio.run(serve())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="k2", description="K2 market-data platform")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, help="embedded stack state (default: $K2_DATA_DIR or .k2)")
        return p

    up = with_data_dir(sub.add_parser("up", help="start the embedded stack (broker, ClickHouse)"))
    up.add_argument("--detach", action="store_true", help="run in the background; stop with `k2 down`")
    up.add_argument("--feeds", choices=["auto", "live", "replay", "none"], default="auto",
                    help="auto: live exchanges when reachable, else replay the recorded captures")  # fmt: skip
    up.add_argument("--replay", metavar="DIR", help="serve <exchange>.jsonl captures from DIR as fake exchanges")
    up.add_argument("--speed", default="1", help="replay speed multiplier, or 'max'")
    up.add_argument("--no-loop", action="store_true", help="replay the captures once instead of looping")
    up.add_argument("--no-flows", action="store_true", help="without the Prefect server and the offload flows")
    up.set_defaults(func=_cmd_up)
    with_data_dir(sub.add_parser("down", help="stop the embedded stack")).set_defaults(func=_cmd_down)
    st = with_data_dir(sub.add_parser("status", help="health and endpoints; exit 1 if anything is unhealthy"))
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)
    sql = sub.add_parser("sql", help="run one query and print what ClickHouse returns")
    sql.add_argument("query")
    sql.add_argument("--format", default="TabSeparated", help="output format unless the query has FORMAT")
    sql.set_defaults(func=_cmd_sql)
    handler = sub.add_parser("handler", help="run one exchange's feed handler")
    handler.add_argument("exchange", choices=EXCHANGES)
    handler.add_argument("--ws-url", help="connect here instead of instruments.yaml's ws_url (replay, tests)")
    handler.add_argument("--bootstrap", help="broker host:port (default: K2_KAFKA_BOOTSTRAP)")
    handler.add_argument("--metrics-host", default="127.0.0.1", help="where /metrics and /health listen")
    handler.add_argument("--metrics-port", type=int, help="default: 9101 binance, 9102 kraken, 9103 coinbase")
    handler.add_argument("--backfill", action="store_true", help="fetch gaps over REST (default: K2_BACKFILL)")
    handler.add_argument("--rest-url", help="REST base URL for backfill instead of instruments.yaml's rest_url")
    handler.set_defaults(func=_cmd_handler)
    norm = sub.add_parser("normalize", help="raw frames on stdin -> trade records (JSON lines) on stdout")
    norm.add_argument("exchange", choices=EXCHANGES)
    norm.set_defaults(func=_cmd_normalize)
    replay = sub.add_parser("replay", help="serve <exchange>.jsonl captures as local fake exchanges")
    replay.add_argument("--dir", required=True, help="folder with binance.jsonl, kraken.jsonl, coinbase.jsonl")
    replay.add_argument("--speed", default="1", help="multiplier of the recorded pace, or 'max'")
    replay.add_argument("--loop", action="store_true", help="repeat forever, renumbering trade ids")
    replay.add_argument("--host", default="127.0.0.1")
    replay.add_argument("--ports", help="binance=9201,kraken=9202,coinbase=9203 (default: any free port)")
    replay.set_defaults(func=_cmd_replay)
    exporter = sub.add_parser("exporter", help="serve ClickHouse-derived metrics (latency, tables) on /metrics")
    exporter.add_argument("--host", help="listen address (default: K2_EXPORTER_HOST, 127.0.0.1)")
    exporter.add_argument("--port", type=int, help="listen port (default: K2_EXPORTER_PORT, 9190)")
    exporter.set_defaults(func=_cmd_exporter)
    db = sub.add_parser("db", help="schema management").add_subparsers(dest="db_command", required=True)
    mig = db.add_parser("migrate", help="apply clickhouse/ migrations not applied yet")
    mig.add_argument("--sql-dir", type=Path, help=argparse.SUPPRESS)
    mig.set_defaults(func=_cmd_migrate)
    repair = db.add_parser(
        "repair-gold",
        help="recompute from silver every candle touched by silver rows inserted since a time "
        "(after a ClickHouse crash tore a materialized-view chain)",
    )
    repair.add_argument("--since", type=datetime.fromisoformat, required=True,
                        help="ISO 8601 time, UTC unless an offset is given, e.g. 2026-11-23T10:00:00")  # fmt: skip
    repair.set_defaults(func=_cmd_repair_gold)
    add_cold_commands(sub)
    add_maintenance_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logs(logging.INFO, json=False)
    try:
        settings = load_settings(data_dir=getattr(args, "data_dir", None))
        return int(args.func(settings, args))
    except K2Error as exc:
        print(f"k2: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `k2 normalize x | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
