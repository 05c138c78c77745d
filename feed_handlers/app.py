"""``k2 handler EXCHANGE``: one feed handler process with its broker, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import signal

from feed_handlers.handler import FeedHandler, HandlerOptions
from feed_handlers.health import HealthServer
from feed_handlers.instruments import EXCHANGES, ExchangeConfig, load_instruments, topic_names
from feed_handlers.publisher import KafkaSink, Publisher
from feed_handlers.recovery import recover_last_trades
from feed_handlers.state import LastTrade
from feed_handlers.transport import WebSocketTransport
from k2.errors import ConfigError
from k2.gc_policy import tune_gc
from k2.settings import Settings

__all__ = ["default_metrics_port", "run_handler"]

log = logging.getLogger(__name__)

_RECOVERY_TIMEOUT_S = 30.0


def default_metrics_port(settings: Settings, exchange: str) -> int:
    return settings.handler_metrics_port_base + EXCHANGES.index(exchange)


async def _last_trades(bootstrap: str, topic: str, config: ExchangeConfig) -> dict[str, LastTrade]:
    symbols = [i.symbol for i in config.symbols]
    try:
        return await asyncio.wait_for(
            recover_last_trades(bootstrap, topic, symbols, stream_type=config.channel), _RECOVERY_TIMEOUT_S
        )
    except (TimeoutError, OSError, Exception) as exc:
        log.warning("could not recover last trade ids from %s (%r): starting without them", topic, exc)
        return {}


async def run_handler(
    exchange: str,
    settings: Settings,
    *,
    ws_url: str | None = None,
    bootstrap: str | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
    backfill: bool | None = None,
    rest_url: str | None = None,
) -> None:
    instruments = load_instruments(settings.instruments)
    config = instruments.exchanges.get(exchange)  # type: ignore[call-overload]
    if config is None:
        raise ConfigError(f"{settings.instruments}: no entry for exchange {exchange!r}")
    brokers = bootstrap or settings.kafka_bootstrap
    # SIGTERM is ours from here on: during the recovery read (up to 30 s with the broker away) too
    stopping = asyncio.Event()
    handlers: list[FeedHandler] = []

    def on_signal() -> None:
        stopping.set()
        for running in handlers:
            running.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    log.info("feed handler starting: reading the last trades back from %s", topic_names(exchange)[0],
             extra={"exchange": exchange, "brokers": brokers})  # fmt: skip
    recovery = asyncio.create_task(_last_trades(brokers, topic_names(exchange)[0], config))
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait({recovery, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    if not recovery.done():
        recovery.cancel()
        log.info("stopped before the feed started", extra={"exchange": exchange})
        return
    last_trades = recovery.result()
    publisher = Publisher(
        KafkaSink(brokers, idempotence=settings.kafka_idempotence, linger_ms=settings.kafka_linger_ms,
                  client_id=f"k2-{exchange}"),
        exchange,
    )
    handler = FeedHandler(
        exchange,
        config,
        publisher,
        WebSocketTransport(),
        options=HandlerOptions(
            ws_url=ws_url, backfill=settings.backfill if backfill is None else backfill, rest_url=rest_url
        ),
        instruments_path=settings.instruments,
        last_trades=last_trades,
    )

    def status() -> tuple[bool, dict[str, object]]:
        healthy = handler.healthy
        return healthy, {
            "status": "ok" if healthy else "failing",
            "exchange": exchange,
            "symbols": handler.runner.symbols,
            "publish_buffer": publisher.buffered,
        }

    if not config.enabled:
        log.warning("%s is disabled in %s: subscribed to nothing until it is enabled again", exchange,
                    settings.instruments)  # fmt: skip
    health = HealthServer(metrics_host, metrics_port or default_metrics_port(settings, exchange), status)
    await health.start()
    tune_gc()
    log.info("feed handler up", extra={"exchange": exchange, "metrics_port": health.port, "brokers": brokers})
    handlers.append(handler)
    if stopping.is_set():
        handler.stop()
    try:
        await handler.run(handle_signals=False)
    finally:
        await health.stop()
