"""``FakeRest``: a venue's REST backfill endpoints on their own port, answering from a ``FakeExchange``.

Only trades the WebSocket server has released are served (same shift, same renumbering), so a test can cut
the WebSocket, let trades go by, and backfill them. The endpoints and shapes are the venue module's
(``binance``, ``kraken``, ``coinbase`` in this package). A minimal HTTP/1.1 server: GET only, keep-alive,
no chunked bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
from http import HTTPStatus

from feed_handlers.replay.server import FakeExchange

__all__ = ["FakeRest"]

_MAX_HEAD = 64 * 1024


class FakeRest:
    """``async with FakeRest(fake) as rest:`` then GET ``rest.url + path``. ``requests`` lists the targets asked."""

    def __init__(self, exchange: FakeExchange, host: str = "127.0.0.1", port: int = 0) -> None:
        self._exchange = exchange
        self.host, self._port = host, port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.requests: list[str] = []

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeRest is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=_MAX_HEAD)

    async def stop(self) -> None:
        """Stop listening and end open connections. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        handlers, self._handlers = set(self._handlers), set()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> FakeRest:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to be closed."""
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, version = head[0].split(" ", 2)
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in head[1:] if line))
        if int(headers.get("content-length", "0")):
            await reader.readexactly(int(headers["content-length"]))
        keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if method == "GET":
            self.requests.append(target)
            answer = self._exchange.rest_answer(target)
            status, body = answer.status, answer.body
        else:
            status, body = 405, b'{"error":"method not allowed"}'
        writer.write(
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep else 'close'}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        return keep
