"""Captures on disk, and serving a folder of them: ``k2 replay`` and ``k2 up --replay DIR``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from feed_handlers.replay.rest import FakeRest
from feed_handlers.replay.server import PATHS, FakeExchange
from k2.errors import ConfigError

__all__ = ["Endpoints", "capture_urls", "find_captures", "load_capture", "run_replay", "ws_url"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where one replayed exchange listens."""

    ws_url: str
    rest_url: str | None


def load_capture(path: Path) -> list[bytes]:
    """One venue WebSocket text frame per line, as received (blank lines skipped)."""
    try:
        return [line for line in path.read_bytes().splitlines() if line.strip()]
    except OSError as exc:
        raise ConfigError(f"cannot read capture {path}: {exc.strerror}") from exc


def find_captures(directory: Path) -> dict[str, Path]:
    """exchange -> ``<exchange>.jsonl`` in ``directory`` (``*.sent.jsonl`` and other names are ignored)."""
    if not directory.is_dir():
        raise ConfigError(f"replay directory {directory} does not exist")
    return {name: directory / f"{name}.jsonl" for name in PATHS if (directory / f"{name}.jsonl").is_file()}


def ws_url(exchange: str, host: str, port: int) -> str:
    """The URL our client uses for a fake ``exchange`` on ``host:port``."""
    if exchange not in PATHS:
        raise ConfigError(f"no fake exchange {exchange!r}: one of {', '.join(PATHS)}")
    return f"ws://{host}:{port}{PATHS[exchange]}"


def capture_urls(directory: Path, *, host: str = "127.0.0.1", ports: Mapping[str, int]) -> dict[str, str]:
    """exchange -> WebSocket URL for every capture in ``directory``, as ``run_replay`` with these ports serves them."""
    urls = {}
    for exchange in find_captures(directory):
        if exchange not in ports:
            raise ConfigError(f"no replay port for {exchange} (capture {directory / f'{exchange}.jsonl'})")
        urls[exchange] = ws_url(exchange, host, ports[exchange])
    return urls


async def run_replay(
    directory: Path,
    *,
    speed: float | None,
    loop: bool,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    rest: bool = True,
    on_ready: Callable[[Mapping[str, Endpoints]], object] | None = None,
) -> None:
    """Serve every ``<exchange>.jsonl`` in ``directory`` as a fake exchange until cancelled.

    ``ports``: ``{"binance": 9201, ...}`` for the WebSocket servers and ``{"binance-rest": 9211, ...}`` for
    the REST servers (``rest``); a port left out is picked by the OS. Each URL is logged, and ``on_ready``
    gets them once everything listens. Raises ConfigError for no capture, a bad capture or an unknown port
    name, and what made a server fail.
    """
    ports = dict(ports or {})
    unknown = sorted(set(ports) - set(PATHS) - {f"{name}-rest" for name in PATHS})
    if unknown:
        raise ConfigError(f"replay ports for unknown exchanges: {', '.join(unknown)}")
    captures = find_captures(directory)
    if not captures:
        raise ConfigError(f"no <exchange>.jsonl capture in {directory} (exchanges: {', '.join(PATHS)})")
    async with contextlib.AsyncExitStack() as stack:
        fakes: list[FakeExchange] = []
        endpoints: dict[str, Endpoints] = {}
        for exchange, path in captures.items():
            fake = FakeExchange(exchange, load_capture(path), speed=speed, loop=loop, host=host,
                                port=ports.get(exchange, 0), bookkeeping=False)  # fmt: skip
            await stack.enter_async_context(fake)
            fakes.append(fake)
            rest_url = None
            if rest:
                server = await stack.enter_async_context(FakeRest(fake, host, ports.get(f"{exchange}-rest", 0)))
                rest_url = server.url
            endpoints[exchange] = Endpoints(fake.url, rest_url)
            log.info("replaying %s as %s at %s (REST %s)", path, exchange, fake.url, rest_url or "off")
        if on_ready is not None:
            on_ready(endpoints)
        await asyncio.gather(*(fake.join() for fake in fakes))
        await asyncio.Event().wait()  # the servers outlived their tasks (cannot happen): serve until cancelled
