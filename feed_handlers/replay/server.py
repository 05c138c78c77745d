"""``FakeExchange``: one venue's WebSocket server fed by a capture, with faults a test can inject.

The server names no venue: what is said on a connection comes from the venue module (``binance``,
``kraken``, ``coinbase`` in this package); the server owns the sockets, the clock and the feed.

The feed: capture frames go out in capture order, paced by their recorded times divided by ``speed``
(``None``: as fast as possible). Times in them move by one shift, so the first frame reads "now" when it goes
out and the recorded spacing is kept exactly (at any speed: at speed 10 the timestamps run ahead of the wall
clock). The feed starts on the first subscription; whenever it is held (waiting for that subscription,
``pause_feed``, ``pause``) the shift grows by the time held, so later trades read the time they go out. A
recorded snapshot in the capture (Coinbase's first frames) seeds the history with the trades before the
first frame, timed in the past. With ``loop`` the capture repeats forever: each lap moves trade ids up by
their span in the capture (contiguous, never repeating) and times by the capture's duration plus one mean
frame gap.

Bookkeeping for tests: ``served`` lists (symbol, trade_id) of every trade written to at least one
connection, once, in the order first written (within a frame, ascending id); ``history`` holds per symbol
every trade the feed released (written or not, plus the seeded ones), which is what snapshots and the REST
server (``rest.FakeRest``) serve; ``connections`` counts accepted connections; ``controls`` the JSON
messages clients sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from feed_handlers.replay._core import Ctx, Out, ReplayTrade, ReplayVenue, RestAnswer, Session
from feed_handlers.replay._timeline import Timeline
from feed_handlers.replay.binance import BinanceReplay
from feed_handlers.replay.coinbase import CoinbaseReplay
from feed_handlers.replay.kraken import KrakenReplay
from k2.errors import ConfigError

__all__ = ["PATHS", "VENUES", "FakeExchange"]

log = logging.getLogger(__name__)

VENUES: Mapping[str, type[ReplayVenue[Any, Any]]] = {
    "binance": BinanceReplay,
    "kraken": KrakenReplay,
    "coinbase": CoinbaseReplay,
}
#: URL path our client uses per venue: ws://host:port + path
PATHS: Mapping[str, str] = {name: venue.path for name, venue in VENUES.items()}

#: trades per symbol the fake's REST API can still serve for a backfill. A venue keeps more, but a
#: replay looping at thousands of trades/s must not grow without end (100k per symbol held ~1.4 GB
#: across the shipped captures' 10 symbols): 10k covers a gap of 10k trades of one symbol.
_HISTORY_PER_SYMBOL = 10_000


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    session: Session
    lock: asyncio.Lock  # one writer at a time: frames (and Coinbase sequence numbers) stay in order
    pending: list[Out] = field(default_factory=list)  # answers held while the server is silent
    hung: bool = False  # hang_connections(): nothing is written to it or read from it any more


class FakeExchange:
    """``async with FakeExchange("kraken", load_capture(path), speed=None) as ex:`` then connect to ``ex.url``.

    ``frames``: capture lines (``load_capture``). ``speed``: multiplier of the recorded pacing, None for as
    fast as possible. ``subscribe_deadline_s`` applies to venues that have one (Coinbase: 5 s).
    ``bookkeeping=False`` keeps ``served`` and ``controls`` empty, for long runs.
    """

    def __init__(
        self,
        exchange: str,
        frames: Sequence[bytes],
        *,
        speed: float | None = None,
        loop: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        subscribe_deadline_s: float = 5.0,
        heartbeat_interval_s: float = 1.0,
        send_timeout_s: float = 10.0,
        bookkeeping: bool = True,
    ) -> None:
        if exchange not in VENUES:
            raise ConfigError(f"no fake exchange {exchange!r}: one of {', '.join(VENUES)}")
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise ConfigError(f"replay speed must be a positive number or None, not {speed!r}")
        self.exchange = exchange
        self.venue: ReplayVenue[Any, Any] = VENUES[exchange]()
        self.capture = self.venue.load(frames)
        self._timeline = Timeline.of(self.capture.frames, self.venue.time_unit_ns)
        self.speed = speed
        self.loop = loop
        self.host, self._port = host, port
        self.subscribe_deadline_s = subscribe_deadline_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.send_timeout_s = send_timeout_s
        self.bookkeeping = bookkeeping
        self.served: list[tuple[str, int]] = []
        self.history: dict[str, deque[ReplayTrade]] = {}
        self.connections = 0
        self.controls: list[Any] = []
        self.finished = asyncio.Event()  # without loop: the whole capture went out
        self._served_set: set[tuple[str, int]] = set()
        self._conns: set[_Conn] = set()
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._feeding = asyncio.Event()
        self._feeding.set()
        self._subscribed = asyncio.Event()
        self._silent_until = 0.0
        self._silence_changed = asyncio.Event()
        self._changed = asyncio.Event()
        self._started_ns = 0
        self._shift_ns = 0
        self._idle = False

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeExchange is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        """Where our client connects: ``ws://host:port/stream``, ``ws://host:port/v2``, ``ws://host:port``."""
        return f"ws://{self.host}:{self.port}{self.venue.path}"

    @property
    def active(self) -> int:
        """Connections open right now."""
        return len(self._conns)

    @property
    def idle(self) -> bool:
        """The feed is parked: waiting for a first subscription, ``resume_feed`` or a silence to end, or done."""
        return self._idle or self.finished.is_set()

    async def start(self) -> None:
        """Listen, seed the history, start the feed (which waits for a first subscription) and heartbeats."""
        if self._server is not None:
            return
        self._started_ns = time.monotonic_ns()
        self._server = await serve(self._handle, self.host, self._port, compression=None, max_size=2**20)
        self._seed()
        self._tasks = [asyncio.create_task(self._feed(), name=f"replay-{self.exchange}-feed"),
                       asyncio.create_task(self._tick(), name=f"replay-{self.exchange}-heartbeat")]  # fmt: skip

    async def stop(self) -> None:
        """Stop the feed and heartbeats, close every connection (1001) and the listener. Idempotent."""
        tasks, self._tasks = self._tasks, []
        self.pause(0)  # nothing may wait for the end of a silence any more
        for conn in list(self._conns):
            if conn.hung:  # it would never answer the closing handshake
                conn.ws.transport.abort()
        self._feeding.set()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def join(self) -> None:
        """Wait while the server runs; raise what made its feed or heartbeat task fail."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- waiting (tests: wait on conditions, not sleeps) -----------------------------------------------

    async def wait_until(self, predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
        """Return once ``predicate()`` is true; it is checked after every change the server makes."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self._changed.wait()

    async def wait_for_client(self) -> None:
        """Until some connection has subscribed (the feed is then running)."""
        await self._subscribed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- faults ----------------------------------------------------------------------------------------

    async def drop_connections(self) -> None:
        """Cut every connection without a close frame (transport abort), as a network failure would."""
        conns = list(self._conns)
        for conn in conns:
            conn.ws.transport.abort()
        await self.wait_until(lambda: self._conns.isdisjoint(conns))

    async def close_all(self, code: int, reason: str = "") -> None:
        """Close every connection with a close frame (e.g. 1001 going away, 1008 policy violation)."""
        conns = list(self._conns)
        await asyncio.gather(*(conn.ws.close(code, reason) for conn in conns))
        await self.wait_until(lambda: self._conns.isdisjoint(conns))

    def pause(self, seconds: float) -> None:
        """Go silent for ``seconds`` (math.inf: until ``pause(0)``): no trades, heartbeats, acks or pongs.

        Pongs and heartbeats due meanwhile are dropped; acks and snapshots are queued and go out when it ends
        (client messages are still read and recorded); the feed holds its position. WebSocket protocol pings
        are still answered (by the library).
        """
        self._silent_until = time.monotonic() + seconds
        self._silence_changed.set()
        self._silence_changed = asyncio.Event()

    def hang_connections(self) -> None:
        """The peer hangs on every open connection (a stalled host, a dead route): nothing more is written to
        them and nothing read from them, so WebSocket protocol pings go unanswered; the socket stays open.
        New connections are served as usual. Frames the hung connections miss are not ``served``."""
        for conn in self._conns:
            conn.hung = True
            conn.ws.transport.pause_reading()
        self._notify()

    def pause_feed(self) -> None:
        """Hold the capture position: no new trades until ``resume_feed``; heartbeats and acks go on."""
        self._feeding.clear()

    def resume_feed(self) -> None:
        self._feeding.set()

    async def send_raw(self, frame: str | bytes, *, binary: bool = False) -> None:
        """Write ``frame`` as is to every connection (a text frame, even of invalid UTF-8, unless ``binary``)."""
        for conn in list(self._conns):
            async with conn.lock:
                with contextlib.suppress(ConnectionClosed):
                    await conn.ws.send(frame, text=not binary)

    async def send_server_shutdown(self) -> None:
        """Binance's maintenance notice to every connection; ConfigError for a venue without one."""
        data = self.venue.server_shutdown(self._ctx())
        for conn in list(self._conns):
            async with conn.lock:
                await self._write(conn, [Out(data)])

    # -- REST ------------------------------------------------------------------------------------------

    def rest_answer(self, target: str) -> RestAnswer:
        """Answer ``GET target`` (path and query) from the released trades, as the venue's REST API would."""
        url = urlsplit(target)
        return self.venue.rest(url.path, dict(parse_qsl(url.query)), self._ctx())

    # -- the feed --------------------------------------------------------------------------------------

    def _ctx(self) -> Ctx:
        return Ctx(time.time_ns(), time.monotonic(), time.monotonic_ns() - self._started_ns,
                   self.heartbeat_interval_s, self.history)  # fmt: skip

    def _seed(self) -> None:
        """Time the feed from now, and put the capture's recorded snapshot trades in the history."""
        unit = self.venue.time_unit_ns
        shift = time.time_ns() - self._timeline.start_ns
        self._shift_ns = shift - shift % unit  # whole venue units: every recorded digit keeps its spacing
        seeded = [t for frame in self.capture.seed for t in self.venue.render(frame, self._shift_ns, {})[1]]
        firsts = self._timeline.firsts  # a recorded snapshot may overlap the first updates: those win
        unique = {(t.symbol, t.trade_id): t for t in seeded if t.trade_id < firsts.get(t.symbol, t.trade_id + 1)}
        self._release([unique[key] for key in sorted(unique)])

    async def _feed(self) -> None:
        frames, timeline, unit = self.capture.frames, self._timeline, self.venue.time_unit_ns
        anchor_mono, anchor_v = time.monotonic(), timeline.start_ns
        for lap in itertools.count():
            if not frames:
                break
            offsets = timeline.offsets(lap)
            for frame, recorded in zip(frames, timeline.times, strict=True):
                v = recorded + lap * timeline.lap_ns
                if self.speed is not None:
                    delay = anchor_mono + (v - anchor_v) / self.speed / 1e9 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    await asyncio.sleep(0)
                held_ns = await self._hold()
                if held_ns:  # the timeline moves on by the time held: later trades read the time they go out
                    self._shift_ns += held_ns - held_ns % unit
                    anchor_mono, anchor_v = time.monotonic(), v
                rendered, trades = self.venue.render(frame, self._shift_ns + lap * timeline.lap_ns, offsets)
                self._release(trades)
                for conn in list(self._conns):
                    out = self.venue.route(conn.session, rendered)
                    if out is not None:
                        async with conn.lock:
                            await self._write(conn, [out])
            if not self.loop:
                break
        self.finished.set()
        self._notify()

    async def _hold(self) -> int:
        """Wait while the feed is held; the ns waited (0 when it was not held)."""
        start = time.monotonic_ns()
        held = False
        while True:
            if self._subscribed.is_set() and self._feeding.is_set() and not self._silent():
                break
            if not held:
                held = self._idle = True
                self._notify()
            if not self._subscribed.is_set():
                await self._subscribed.wait()
            elif not self._feeding.is_set():
                await self._feeding.wait()
            else:
                await self._until_audible()
        if not held:
            return 0
        self._idle = False
        return time.monotonic_ns() - start

    def _release(self, trades: Sequence[ReplayTrade]) -> None:
        for trade in trades:
            released = self.history.get(trade.symbol)
            if released is None:
                released = self.history[trade.symbol] = deque(maxlen=_HISTORY_PER_SYMBOL)
            released.append(trade)
        if trades:
            self._notify()

    def _silent(self) -> bool:
        return time.monotonic() < self._silent_until

    async def _until_audible(self) -> None:
        while (rest := self._silent_until - time.monotonic()) > 0:
            changed = self._silence_changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rest if math.isfinite(rest) else None):
                    await changed.wait()

    async def _tick(self) -> None:
        for beat in itertools.count():
            await asyncio.sleep(self.heartbeat_interval_s)
            if self._silent():
                continue
            ctx = self._ctx()
            for conn in list(self._conns):
                outs = self.venue.on_tick(conn.session, ctx, beat)
                if outs or conn.pending:
                    async with conn.lock:
                        await self._write(conn, outs)

    # -- connections -----------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session = self.venue.new_session(ws.request.path if ws.request is not None else "/")
        conn = _Conn(ws, session, asyncio.Lock())
        self.connections += 1
        self._conns.add(conn)
        self._notify()
        deadline = time.monotonic() + self.subscribe_deadline_s
        try:
            async with conn.lock:
                await self._write(conn, self.venue.on_connect(session, self._ctx()))
            self._note(session)
            while True:
                if self.venue.has_subscribe_deadline and not session.subscribed:
                    try:
                        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                            message = await ws.recv()
                    except TimeoutError:
                        await ws.close(1000, f"no subscribe within {self.subscribe_deadline_s:g} s")
                        return
                else:
                    message = await ws.recv()
                if self.bookkeeping:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        self.controls.append(orjson.loads(message))
                async with conn.lock:
                    await self._write(conn, self.venue.on_message(session, message, self._ctx()))
                self._note(session)
        except ConnectionClosed:
            pass
        finally:
            self._conns.discard(conn)
            self._notify()

    def _note(self, session: Session) -> None:
        if session.subscribed and not self._subscribed.is_set():
            self._subscribed.set()
        self._notify()

    async def _write(self, conn: _Conn, outs: Sequence[Out]) -> None:
        """Send ``outs`` in order (the caller holds ``conn.lock``); stop at the first failure.

        While the server is silent, liveness frames are dropped and the rest wait in ``conn.pending`` for the
        next write after the silence (the heartbeat tick flushes them), so the reader never blocks.
        """
        if conn.hung:
            return
        if self._silent():
            conn.pending.extend(out for out in outs if not out.liveness)
            return
        outs, conn.pending = [*conn.pending, *outs], []
        for out in outs:
            data = out.data() if callable(out.data) else out.data
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await conn.ws.send(data, text=True)
            except TimeoutError:  # a client that does not read is cut, as venues do
                log.warning("%s: a client stopped reading; dropping it", self.exchange)
                conn.ws.transport.abort()
                return
            except ConnectionClosed:
                return
            conn.session.last_sent_mono = time.monotonic()
            if out.trades and self.bookkeeping:
                for trade in out.trades:
                    key = (trade.symbol, trade.trade_id)
                    if key not in self._served_set:
                        self._served_set.add(key)
                        self.served.append(key)
                self._notify()
