"""The embedded ClickHouse process: chDB + HTTP endpoint + Kafka table consumers.

Run as ``python -m k2.embedded.clickhouse_server --data-dir DIR --host H --port P``; ``k2 up`` does.
SIGTERM first lets the consumers catch up with their topics (at most ``DRAIN_TIMEOUT_S``): ``k2 down``
stops the feed handlers before ClickHouse and the broker after it, and the embedded broker keeps
nothing, so what is left unread then would be lost. Then it stops the consumers (their last block is
either inserted and committed or redelivered), the endpoint, and closes chDB so its data directory is
consistent for the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from k2.embedded.chdb_engine import ChdbEngine
from k2.embedded.http_server import ClickHouseHTTPServer
from k2.embedded.kafka_engine import KafkaEngine
from k2.gc_policy import tune_gc
from k2.settings import load_settings

__all__ = ["DRAIN_TIMEOUT_S", "main", "serve"]

#: How long SIGTERM waits for the consumers to catch up; inside the supervisor's 15 s stop grace.
DRAIN_TIMEOUT_S = 10.0

log = logging.getLogger("k2.clickhouse")


async def serve(data_dir: Path, host: str, port: int, password: str = "", lanes: int = 1) -> None:
    """Serve until SIGTERM/SIGINT. ``lanes``: see ``KafkaEngine``."""
    engine = ChdbEngine(data_dir / "chdb")
    http = ClickHouseHTTPServer(engine, host, port, data_dir / "tmp", password=password)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kafka = KafkaEngine(engine, lanes=lanes)
    tune_gc()  # the consumers decode a record object per message: see k2.gc_policy
    http.start()
    log.info("embedded ClickHouse (chDB) listening on http://%s:%d, data in %s", host, http.port, data_dir)
    consumers = asyncio.create_task(kafka.run(), name="kafka-engine")
    waiter = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({consumers, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if consumers in done:
            consumers.result()  # surfaces the failure
        behind = await kafka.drain(DRAIN_TIMEOUT_S)
        if behind:
            log.error("stopping with unread messages: %s did not catch up in %.0fs", ", ".join(behind), DRAIN_TIMEOUT_S)
        else:
            log.info("every Kafka table caught up with its topics")
    finally:
        consumers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumers
        waiter.cancel()
        http.stop()
        engine.close()
        log.info("embedded ClickHouse stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # chDB's user_files_path (what file() and IcebergLocal may read) is its working directory, whatever
    # the connection string says: run in the stack's data dir, which holds the Iceberg warehouse.
    data_dir = args.data_dir.resolve()
    os.chdir(data_dir.parent)
    settings = load_settings()
    password = settings.clickhouse_password.get_secret_value()  # from K2_CLICKHOUSE_PASSWORD, never argv
    asyncio.run(serve(data_dir, args.host, args.port, password, settings.clickhouse_insert_lanes))


if __name__ == "__main__":
    main()
