"""Local fake exchanges speaking each venue's WebSocket protocol, fed by a capture.

``FakeExchange(venue, lines)`` serves one venue: the handshake and control messages are the venue's
real shapes (Binance SUBSCRIBE acks and serverShutdown; Kraken status, per-symbol acks, snapshots,
heartbeats, pong; Coinbase 5 s subscribe deadline, snapshots newest first, cumulative subscriptions
ack, heartbeats, per-connection ``sequence_num``). Capture frames are re-timed to now and, when
looping, renumbered (see :mod:`.capture`). Faults can be injected for tests, and ``served`` records
every trade written to at least one connection, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from feed_handlers.replay.capture import Item, Served, _kraken_frame, load_items, ns_to_rfc3339

__all__ = ["PATHS", "FakeExchange"]

log = logging.getLogger(__name__)

PATHS = {"binance": "/stream", "kraken": "/v2", "coinbase": ""}
_SNAPSHOT = {"kraken": 50, "coinbase": 100}


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    subscriptions: set[str] = field(default_factory=set)
    heartbeats: bool = False
    sequence: itertools.count[int] = field(default_factory=itertools.count)
    last_sent: float = field(default_factory=time.monotonic)


class FakeExchange:
    """``async with FakeExchange("kraken", lines, speed=None) as ex: ex.url``. Owns its tasks."""

    def __init__(
        self,
        venue: str,
        lines: Sequence[bytes],
        *,
        speed: float | None = None,
        loop: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        subscribe_deadline_s: float = 5.0,
        heartbeat_interval_s: float = 1.0,
    ) -> None:
        self.venue = venue
        self.items: list[Item] = load_items(venue, list(lines))
        self.speed = speed
        self.loop = loop
        self._host, self._port = host, port
        self.subscribe_deadline_s = subscribe_deadline_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.served: list[tuple[str, int]] = []
        self.history: dict[str, deque[Served]] = defaultdict(lambda: deque(maxlen=100_000))
        self.connections = 0
        self.controls: list[dict[str, Any]] = []  # every control message clients sent, in order
        self.finished = asyncio.Event()  # the capture was served once (without loop)
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._feeding = asyncio.Event()
        self._feeding.set()
        self._silent_until = 0.0
        self._has_client = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://{self._host}:{port}{PATHS[self.venue]}"

    async def start(self) -> None:
        self._server = await serve(self._serve, self._host, self._port, compression=None, ping_interval=None)
        self._tasks = [asyncio.create_task(self._feed(), name=f"{self.venue}-feed"),
                       asyncio.create_task(self._heartbeat(), name=f"{self.venue}-heartbeat")]  # fmt: skip

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults ----------------------------------------------------------------------------------

    async def drop_connections(self) -> None:
        """Abort every connection without a close frame (a network cut)."""
        for client in list(self._clients):
            client.ws.transport.abort()

    async def close_all(self, code: int, reason: str = "") -> None:
        for client in list(self._clients):
            await client.ws.close(code, reason)

    def pause(self, seconds: float) -> None:
        """Go silent: no trades, no heartbeats, for ``seconds``."""
        self._silent_until = time.monotonic() + seconds

    def pause_feed(self) -> None:
        self._feeding.clear()

    def resume_feed(self) -> None:
        self._feeding.set()

    async def send_raw(self, frame: str | bytes) -> None:
        for client in list(self._clients):
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(frame if isinstance(frame, str) else frame.decode(errors="replace"))

    async def send_server_shutdown(self) -> None:
        """Binance's maintenance notice on the combined stream."""
        ms = time.time_ns() // 1_000_000
        await self.send_raw(orjson.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": ms}}))

    async def wait_for_client(self) -> None:
        await self._has_client.wait()

    # -- the capture feed ------------------------------------------------------------------------

    async def _feed(self) -> None:
        trades = [i for i in self.items if i.symbols and not i.snapshot]
        for item in (i for i in self.items if i.snapshot):  # history a subscriber's snapshot starts from
            self._remember(item.render(time.time_ns() - self.items[-1].time_ns, {})[1])
        if not trades:
            self.finished.set()
            return
        await self._has_client.wait()
        t0 = trades[0].time_ns
        duration = trades[-1].time_ns - t0 + 1_000_000
        bounds: dict[str, tuple[int, int]] = {}
        for item in trades:
            for symbol, (lo, hi) in item.ids.items():
                old_lo, old_hi = bounds.get(symbol, (lo, hi))
                bounds[symbol] = (min(old_lo, lo), max(old_hi, hi))
        span = {symbol: hi - lo + 1 for symbol, (lo, hi) in bounds.items()}
        start_wall, start_mono = time.time_ns(), time.monotonic()
        for lap in itertools.count():
            offsets = {s: lap * n for s, n in span.items()}
            for item in trades:
                offset_ns = lap * duration + item.time_ns - t0
                if self.speed:
                    due = start_mono + offset_ns / 1e9 / self.speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                else:
                    await asyncio.sleep(0)
                await self._feeding.wait()
                silence = self._silent_until - time.monotonic()
                if silence > 0:  # an injected silence: hold the feed until it ends
                    await asyncio.sleep(silence)
                # trade times become the (scaled) send time: at speed 1 the recorded spacing is kept exactly
                shift = (
                    start_wall + int(offset_ns / self.speed) - item.time_ns
                    if self.speed
                    else time.time_ns() - item.time_ns
                )
                payload, served = item.render(shift, offsets)
                if await self._broadcast(item.route, payload):
                    self.served.extend((s.symbol, s.trade_id) for s in served)
                self._remember(served)
            if not self.loop:
                self.finished.set()
                return

    def _remember(self, served: list[Served]) -> None:
        for s in served:
            self.history[s.symbol].append(s)

    async def _broadcast(self, route: str, payload: Any) -> bool:
        sent = False
        for client in list(self._clients):
            if route.lower() in client.subscriptions or route in client.subscriptions:
                sent = await self._send(client, payload) or sent
        return sent

    async def _send(self, client: _Client, payload: Any) -> bool:
        if self.venue == "coinbase" and isinstance(payload, dict):
            payload = {**payload, "sequence_num": next(client.sequence)}
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        try:
            await client.ws.send(data.decode())
        except ConnectionClosed:
            return False
        client.last_sent = time.monotonic()
        return True

    async def _heartbeat(self) -> None:
        counter = itertools.count(41691)  # Coinbase's counter is server-wide, not per connection
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if time.monotonic() < self._silent_until:
                continue
            beat = next(counter)
            for client in list(self._clients):
                if self.venue == "kraken" and client.subscriptions:
                    if time.monotonic() - client.last_sent >= self.heartbeat_interval_s:
                        await self._send(client, {"channel": "heartbeat"})
                elif self.venue == "coinbase" and client.heartbeats:
                    now = time.time_ns()
                    await self._send(client, {"channel": "heartbeats", "client_id": "", "timestamp": ns_to_rfc3339(now),
                                              "sequence_num": 0, "events": [{"current_time": ns_to_rfc3339(now),
                                                                             "heartbeat_counter": beat}]})  # fmt: skip

    # -- one connection --------------------------------------------------------------------------

    async def _serve(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self.connections += 1
        self._clients.add(client)
        try:
            if self.venue == "kraken":
                await self._send(client, {"channel": "status", "type": "update", "data": [{"api_version": "v2",
                                          "connection_id": 13834774380200032777, "system": "online",
                                          "version": "2.0.0"}]})  # fmt: skip
            if self.venue == "binance" and ws.request is not None and "streams=" in ws.request.path:
                client.subscriptions.update(ws.request.path.split("streams=", 1)[1].split("/"))
            first = True
            while True:
                if first and self.venue == "coinbase":
                    try:
                        message = await asyncio.wait_for(ws.recv(), self.subscribe_deadline_s)
                    except TimeoutError:
                        await ws.close(1000, "subscribe deadline")
                        return
                else:
                    message = await ws.recv()
                first = False
                control = orjson.loads(message)
                self.controls.append(control)
                await self._control(client, control)
                self._has_client.set()
        except (ConnectionClosed, orjson.JSONDecodeError):
            return
        finally:
            self._clients.discard(client)

    async def _control(self, client: _Client, msg: dict[str, Any]) -> None:
        if self.venue == "binance":
            streams = {s.lower() for s in msg.get("params", [])}
            if msg.get("method") == "SUBSCRIBE":
                client.subscriptions |= streams
            elif msg.get("method") == "UNSUBSCRIBE":
                client.subscriptions -= streams
            await self._send(client, {"result": None, "id": msg.get("id")})
        elif self.venue == "kraken":
            if msg.get("method") == "ping":
                now = ns_to_rfc3339(time.time_ns())
                await self._send(
                    client, {"method": "pong", "req_id": msg.get("req_id"), "time_in": now, "time_out": now}
                )
                return
            params = msg.get("params", {})
            for symbol in params.get("symbol", []):
                if msg.get("method") == "subscribe":
                    client.subscriptions.add(symbol)
                else:
                    client.subscriptions.discard(symbol)
                now = ns_to_rfc3339(time.time_ns())
                await self._send(client, {"method": msg.get("method"), "result": {"channel": "trade", "symbol": symbol,
                                          "snapshot": params.get("snapshot", False)}, "success": True,
                                          "time_in": now, "time_out": now, "req_id": msg.get("req_id")})  # fmt: skip
                recent = list(self.history[symbol])[-_SNAPSHOT["kraken"] :]
                if msg.get("method") == "subscribe" and params.get("snapshot") and recent:
                    await self._send(client, _kraken_frame("snapshot", [s.element for s in recent]))
                    self.served.extend((s.symbol, s.trade_id) for s in recent)
        else:
            products = msg.get("product_ids", [])
            if msg.get("channel") == "heartbeats":
                client.heartbeats = msg.get("type") == "subscribe"
            elif msg.get("type") == "subscribe":
                for product in products:
                    client.subscriptions.add(product)
                    recent = list(self.history[product])[-_SNAPSHOT["coinbase"] :][::-1]  # newest first
                    if recent:
                        await self._send(client, {"channel": "market_trades", "client_id": "",
                                                  "timestamp": ns_to_rfc3339(time.time_ns()), "sequence_num": 0,
                                                  "events": [{"type": "snapshot",
                                                              "trades": [s.element for s in recent]}]})  # fmt: skip
                        self.served.extend((s.symbol, s.trade_id) for s in reversed(recent))
            else:
                client.subscriptions -= set(products)
            subs = {"market_trades": sorted(client.subscriptions)}
            if client.heartbeats:
                subs["heartbeats"] = ["heartbeats"]
            await self._send(client, {"channel": "subscriptions", "client_id": "",
                                      "timestamp": ns_to_rfc3339(time.time_ns()), "sequence_num": 0,
                                      "events": [{"subscriptions": subs}]})  # fmt: skip
