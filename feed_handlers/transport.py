"""The seam between the runner and the network: a WebSocket connection as the runner needs it.

``WebSocketTransport`` is the real one (``websockets``); unit tests plug in an in-memory transport.
"""

from __future__ import annotations

from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

__all__ = ["Connection", "Transport", "TransportClosed", "WebSocketTransport"]


class TransportClosed(Exception):
    """The connection ended; ``code`` is the WebSocket close code (1006 when there was none)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code} {reason}".strip())
        self.code = code
        self.reason = reason


class Connection(Protocol):
    async def send(self, message: str) -> None: ...

    async def recv(self) -> bytes | str:
        """The next frame; raises TransportClosed when the connection is gone."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class Transport(Protocol):
    async def connect(self, url: str) -> Connection:
        """Open a connection; raises TransportClosed (or OSError) when it cannot."""
        ...


class _WebSocket:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, message: str) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def recv(self) -> bytes | str:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)


def _closed(exc: ConnectionClosed) -> TransportClosed:
    frame = exc.rcvd or exc.sent
    return TransportClosed(frame.code if frame else 1006, frame.reason if frame else "no close frame")


class WebSocketTransport:
    """websockets client with protocol pings (Binance: pong within 60 s; we ping every 20 s).

    A peer that stops answering is given up ``ping_timeout_s`` after an unanswered ping, plus at most
    ``close_timeout_s`` for the closing handshake it will not answer either.
    """

    def __init__(
        self,
        ping_interval_s: float = 20.0,
        ping_timeout_s: float = 20.0,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 10.0,
    ):
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._open_timeout_s = open_timeout_s
        self._close_timeout_s = close_timeout_s

    async def connect(self, url: str) -> Connection:
        try:
            ws = await connect(
                url,
                ping_interval=self._ping_interval_s,
                ping_timeout=self._ping_timeout_s,
                open_timeout=self._open_timeout_s,
                close_timeout=self._close_timeout_s,
                max_size=2**24,
                max_queue=64,
                compression=None,
            )
        except (InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise TransportClosed(1006, f"cannot connect: {exc}") from exc
        except websockets.exceptions.WebSocketException as exc:
            raise TransportClosed(1006, f"cannot connect: {exc}") from exc
        return _WebSocket(ws)
