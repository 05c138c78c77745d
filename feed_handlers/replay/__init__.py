"""Fake exchanges serving recorded captures: ``k2 replay``, ``k2 up --replay`` and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

from feed_handlers.replay.capture import load_capture
from feed_handlers.replay.server import PATHS, FakeExchange

__all__ = ["PATHS", "FakeExchange", "load_capture", "run_replay"]

log = logging.getLogger(__name__)


async def run_replay(
    directory: Path, *, speed: float | None, loop: bool, host: str = "127.0.0.1", ports: Mapping[str, int] | None = None
) -> None:
    """Serve every ``<exchange>.jsonl`` in ``directory`` until cancelled."""
    captures = {p.stem: p for p in sorted(directory.glob("*.jsonl")) if p.stem in PATHS}  # noqa: ASYNC240 - startup
    if not captures:
        raise FileNotFoundError(f"no <exchange>.jsonl capture in {directory}")
    async with contextlib.AsyncExitStack() as stack:
        for exchange, path in captures.items():
            fake = FakeExchange(exchange, load_capture(path), speed=speed, loop=loop, host=host,
                                port=(ports or {}).get(exchange, 0))  # fmt: skip
            await stack.enter_async_context(fake)
            log.info("replaying %s as %s at %s", path, exchange, fake.url)
        await asyncio.Event().wait()
