"""A fake venue REST API for gap backfill, answering from what a FakeExchange has replayed.

Binance only: ``GET /api/v3/historicalTrades`` and ``GET /api/v3/aggTrades`` with ``symbol``,
``fromId`` and ``limit``, in Binance's REST shapes. Enough to test the handler's backfill path
end to end; Kraken and Coinbase backfill parsers are exercised by unit tests on their documented shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit

import orjson

from feed_handlers.replay.server import FakeExchange

__all__ = ["FakeRest"]


class FakeRest:
    def __init__(self, exchange: FakeExchange, host: str = "127.0.0.1") -> None:
        self._exchange = exchange
        self._host = host
        self._server: asyncio.Server | None = None
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{self._host}:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> FakeRest:
        self._server = await asyncio.start_server(self._serve, self._host, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _answer(self, target: str) -> tuple[int, bytes]:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        symbol, from_id, limit = query.get("symbol", ""), int(query.get("fromId", 0)), int(query.get("limit", 500))
        trades = sorted((s for s in self._exchange.history.get(symbol, ()) if s.trade_id >= from_id),
                        key=lambda s: s.trade_id)[:limit]  # fmt: skip
        if url.path == "/api/v3/aggTrades":
            rows = [{k: s.element[k] for k in ("a", "p", "q", "f", "l", "T", "m", "M")} for s in trades]
        elif url.path == "/api/v3/historicalTrades":
            rows = [{"id": s.trade_id, "price": s.price, "qty": s.quantity, "quoteQty": "0",
                     "time": s.ts_ns // 1_000_000, "isBuyerMaker": s.taker_side == "sell", "isBestMatch": True}
                    for s in trades]  # fmt: skip
        else:
            return 404, b'{"code":-1,"msg":"not found"}'
        return 200, orjson.dumps(rows)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            self.requests.append(target)
            status, body = self._answer(target)
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)  # fmt: skip
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
