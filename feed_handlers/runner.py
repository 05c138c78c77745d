"""The one generic WebSocket runner: it keeps a venue's subscriptions alive and names no venue.

A venue plugs in as data (:class:`~feed_handlers.exchanges.Venue`): URL, message builders and limits.
The runner owns connect, subscribe (throttled to the venue's message rate, within its deadline), a
silence watchdog on the monotonic clock, capped exponential backoff with full jitter, resubscription,
proactive rotation before the venue's connection age limit (the new connection is subscribed and
delivering before the old one closes; the overlap is deduplicated downstream), hot symbol changes,
and splitting symbols over connections where a venue caps streams per connection.

Every frame goes to ``on_frame(frame, ts_received_ns, connection_id)``, which returns True when the
venue asked us to go (e.g. Binance serverShutdown): the runner then rotates at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from feed_handlers.exchanges import Venue
from feed_handlers.metrics import CONNECTED, RECONNECTS, SUBSCRIBED
from feed_handlers.transport import Connection, Transport, TransportClosed
from feed_handlers.watchdog import ReadWatchdog
from k2.logs import bind

__all__ = ["FrameHandler", "Runner", "RunnerSettings", "backoff_delay"]

log = logging.getLogger(__name__)

FrameHandler = Callable[[bytes | str, int, int], Awaitable[bool]]

_POLICY_VIOLATION = 1008
_connection_ids = itertools.count(1)


@dataclass(frozen=True)
class RunnerSettings:
    reconnect_backoff_initial_s: float = 0.5
    reconnect_backoff_max_s: float = 30.0
    #: After close code 1008 (policy) the venue refused us on purpose: wait this long, never loop.
    policy_close_backoff_s: float = 300.0
    #: Rotate this long before the venue's maximum connection age.
    rotate_before_s: float = 1800.0
    #: How long the new connection may take to deliver its first frame during a rotation.
    rotation_overlap_timeout_s: float = 30.0
    #: After the new connection's first frame, the old one is still read this long before it is closed:
    #: trades it had in flight are not lost, and those both deliver are dropped once by trade id.
    rotation_drain_s: float = 2.0
    #: A connection that lived this long resets the backoff.
    healthy_after_s: float = 30.0


def backoff_delay(attempt: int, initial_s: float, max_s: float, draw: Callable[[float, float], float] = random.uniform
                  ) -> float:  # fmt: skip
    """Seconds to wait before reconnect ``attempt`` (1, 2, ...): capped exponential with jitter.

    Drawn between ``initial_s / 2`` and ``min(max_s, initial_s * 2**attempt)``, so handlers cut off at the same
    moment do not all come back at the same moment.
    """
    return draw(initial_s / 2, min(max_s, initial_s * 2 ** min(attempt, 30)))


class _Silent(Exception):
    """No frame for longer than the venue's silence timeout."""


class Runner:
    """Keeps ``symbols`` subscribed on ``venue`` until :meth:`stop`."""

    def __init__(
        self,
        venue: Venue,
        url: str,
        symbols: Sequence[str],
        *,
        channel: str,
        on_frame: FrameHandler,
        transport: Transport,
        settings: RunnerSettings | None = None,
    ) -> None:
        self.venue = venue
        self.url = url
        self.channel = channel
        self.log = bind(log, exchange=venue.name)
        self._on_frame = on_frame
        self._transport = transport
        self.settings = settings or RunnerSettings()
        self._groups: list[_Group] = []
        self._stopping = asyncio.Event()
        self._task_group: asyncio.TaskGroup | None = None
        self._req_ids = itertools.count(1)
        self._pending = list(dict.fromkeys(symbols))
        # Fail fast on a channel the venue does not know (ConfigError), before any connection.
        venue.subscribe(self._pending[:1], channel=channel, req_id=0)

    @property
    def symbols(self) -> list[str]:
        return [s for g in self._groups for s in g.symbols] + self._pending

    async def run(self) -> None:
        """Run until stop(); transport errors are retried forever, other errors propagate."""
        async with asyncio.TaskGroup() as tg:
            self._task_group = tg
            self._place(self._pending)
            self._pending = []
            await self._stopping.wait()
            # side by side: each may wait for its unsubscribe and its close, and SIGTERM has 10 s in all
            await asyncio.gather(*(group.stop() for group in self._groups))
        self._task_group = None

    async def stop(self) -> None:
        """Unsubscribe, close every connection, and let run() return. Idempotent."""
        self._stopping.set()

    async def update_symbols(self, symbols: Sequence[str]) -> tuple[list[str], list[str]]:
        """Subscribe to what is new and unsubscribe what is gone, on the live connections."""
        wanted = list(dict.fromkeys(symbols))
        current = self.symbols
        added = [s for s in wanted if s not in current]
        removed = [s for s in current if s not in wanted]
        if self._task_group is None:
            self._pending = wanted
            return added, removed
        for group in self._groups:
            gone = [s for s in group.symbols if s in removed]
            if gone:
                await group.remove(gone)
        self._groups = [g for g in self._groups if g.symbols or not g.task.done()]
        self._place(added)
        self.report_subscribed()
        return added, removed

    def report_subscribed(self) -> None:
        """``k2_feed_subscribed_symbols``: the symbols of the connections that are open now."""
        SUBSCRIBED.labels(self.venue.name).set(sum(len(g.symbols) for g in self._groups if g.up))

    def _place(self, symbols: list[str]) -> None:
        """Subscribe ``symbols`` on the open connections with room, then on new ones. A venue without a cap
        per connection takes them all on the first connection."""
        limit = self.venue.max_streams_per_connection
        cap = limit or len(symbols) or 1
        for group in self._groups:
            room = limit - len(group.symbols) if limit else len(symbols)
            if room > 0 and symbols:
                group.add(symbols[:room])
                symbols = symbols[room:]
        while symbols:
            assert self._task_group is not None
            group = _Group(self, symbols[:cap])
            symbols = symbols[cap:]
            group.task = self._task_group.create_task(group.run(), name=f"{self.venue.name}-connection")
            self._groups.append(group)

    def next_req_id(self) -> int:
        return next(self._req_ids)


class _Group:
    """One logical subscription (a set of symbols) kept alive over successive connections."""

    def __init__(self, runner: Runner, symbols: list[str]) -> None:
        self.runner = runner
        self.symbols = list(symbols)
        self.task: asyncio.Task[None]
        self._conn: Connection | None = None
        self._conn_id = 0
        self._up = False
        self._stop = asyncio.Event()
        self._control = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()  # replaced connections still read for a while

    # -- symbol changes -------------------------------------------------------------------------

    def add(self, symbols: list[str]) -> None:
        self.symbols.extend(symbols)
        if self._conn is not None:
            self._spawn_send(self.runner.venue.subscribe, symbols)

    async def remove(self, symbols: list[str]) -> None:
        self.symbols = [s for s in self.symbols if s not in symbols]
        if self._conn is not None:
            await self._send_all(self._conn, self.runner.venue.unsubscribe, symbols)
        if not self.symbols:
            await self.stop()  # some venues close a connection with no subscription anyway

    def _spawn_send(self, builder: Callable[..., list[str]], symbols: list[str]) -> None:
        conn = self._conn
        if conn is None:
            return

        async def send() -> None:
            with contextlib.suppress(TransportClosed, OSError):
                await self._send_all(conn, builder, symbols)

        assert self.runner._task_group is not None
        self.runner._task_group.create_task(send(), name=f"{self.runner.venue.name}-subscribe")

    async def _send_all(self, conn: Connection, builder: Callable[..., list[str]], symbols: list[str]) -> None:
        venue = self.runner.venue
        async with self._control:  # one burst at a time keeps us under the venue's message rate
            for message in builder(symbols, channel=self.runner.channel, req_id=self.runner.next_req_id()):
                await conn.send(message)
                await asyncio.sleep(1.0 / venue.max_messages_per_s)

    # -- lifecycle ------------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(TransportClosed, OSError):
                await asyncio.wait_for(self._send_all(conn, self.runner.venue.unsubscribe, self.symbols), 2.0)
        if hasattr(self, "task"):
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for retiring in list(self._retiring):  # cancelled: each still closes its connection
            retiring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retiring

    async def run(self) -> None:
        settings = self.runner.settings
        attempt = 0
        reason = "start"
        while not self._stop.is_set():
            if reason != "start":
                RECONNECTS.labels(self.runner.venue.name, reason).inc()
            try:
                conn = await self._open(current=True)
            except (TransportClosed, OSError) as exc:
                attempt += 1
                reason = "connect_failed"
                await self._backoff(attempt, f"cannot connect to {self.runner.url}: {exc}")
                continue
            started = time.monotonic()
            try:
                reason = await self._serve(conn)
                attempt = 0
            except TransportClosed as exc:
                reason = "policy_close" if exc.code == _POLICY_VIOLATION else "closed"
                if time.monotonic() - started > settings.healthy_after_s:
                    attempt = 0
                attempt += 1
                if exc.code == _POLICY_VIOLATION:
                    wait_s = settings.policy_close_backoff_s
                    self.runner.log.error("%s closed the connection with 1008 (%s): waiting %.0fs, not retrying "
                                          "in a loop", self.runner.venue.name, exc.reason, wait_s)  # fmt: skip
                    await self._sleep(wait_s)
                else:
                    await self._backoff(attempt, f"connection lost ({exc})")
            except _Silent:
                reason = "silent"
                attempt += 1
                await self._backoff(attempt, "no frame within the venue's silence timeout")
            finally:
                self._connected(False)

    async def _open(self, *, current: bool = False) -> Connection:
        conn = await self.runner._transport.connect(self.runner.url)
        if current:  # symbol changes from now on go to this connection, after its initial subscribe
            self._conn = conn
        await self._send_all(conn, self.runner.venue.subscribe, self.symbols)
        return conn

    async def _serve(self, conn: Connection) -> str:
        """Read ``conn`` until it fails (raises) or must be replaced (returns the reason)."""
        venue = self.runner.venue
        settings = self.runner.settings
        self._adopt(conn)
        while True:
            age_limit = venue.max_connection_age_s
            now = asyncio.get_running_loop().time()  # the watchdog's clock (monotonic)
            deadline = None if age_limit is None else now + age_limit - settings.rotate_before_s
            replace = await self._read_until(conn, deadline)
            # Rotation: the successor subscribes and delivers before the current connection closes.
            successor = await self._rotate(conn)
            if successor is None:
                return "rotation_failed"
            conn = successor
            RECONNECTS.labels(venue.name, replace).inc()

    async def _read_until(self, conn: Connection, deadline: float | None) -> str:
        """Hand ``conn``'s frames to ``on_frame`` until it must be replaced (returns why) or fails (raises).

        ``deadline`` is in loop time. One watchdog timer per connection, not one per frame (``ReadWatchdog``).
        """
        on_frame = self.runner._on_frame
        with ReadWatchdog(self.runner.venue.silence_timeout_s, deadline) as dog:
            while dog.expired is None:
                dog.reading()
                try:
                    frame = await conn.recv()
                except asyncio.CancelledError:
                    if not dog.fired():
                        raise
                    break
                dog.done_reading()
                if await on_frame(frame, time.time_ns(), self._conn_id):
                    return "shutdown"
        if dog.expired == "rotation":
            return "rotation"
        await self._close(conn, 1000, "silent")
        raise _Silent

    async def _rotate(self, old: Connection) -> Connection | None:
        old_id = self._conn_id
        reader = asyncio.create_task(self._drain(old, old_id))
        try:
            new = await self._open()
        except (TransportClosed, OSError) as exc:
            self.runner.log.warning("%s: rotation could not open a new connection (%s)", self.runner.venue.name,
                                    exc)  # fmt: skip
            reader.cancel()
            await self._close(old, 1000, "rotation failed")
            return None
        new_id = next(_connection_ids)
        try:
            first = await asyncio.wait_for(new.recv(), self.runner.settings.rotation_overlap_timeout_s)
        except (TimeoutError, TransportClosed):
            first = None
        if first is None:  # the new connection is silent: nothing to overlap with
            await self._retire(old, reader, 0.0)
        else:
            retiring = asyncio.create_task(self._retire(old, reader, self.runner.settings.rotation_drain_s))
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)
        self._adopt(new, new_id)
        if first is not None:
            await self.runner._on_frame(first, time.time_ns(), new_id)
        return new

    async def _retire(self, old: Connection, reader: asyncio.Task[None], drain_s: float) -> None:
        """Keep reading the replaced connection for ``drain_s`` (less if it ends), then close it."""
        try:
            if drain_s > 0:
                await asyncio.wait({reader}, timeout=drain_s)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TransportClosed):
                await reader
            await self._close(old, 1000, "rotated")

    async def _drain(self, conn: Connection, conn_id: int) -> None:
        while True:
            await self.runner._on_frame(await conn.recv(), time.time_ns(), conn_id)

    def _adopt(self, conn: Connection, conn_id: int | None = None) -> None:
        self._conn = conn
        self._conn_id = conn_id or next(_connection_ids)
        self._connected(True)

    def _connected(self, up: bool) -> None:
        venue = self.runner.venue.name
        if up and not self._up:
            CONNECTED.labels(venue).inc()
        elif not up and self._up:
            CONNECTED.labels(venue).dec()
        if not up:
            self._conn = None
        self._up = up
        self.runner.report_subscribed()

    @property
    def up(self) -> bool:
        return self._up

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        with contextlib.suppress(TransportClosed, OSError, TimeoutError):
            await asyncio.wait_for(conn.close(code, reason), 5.0)

    async def _backoff(self, attempt: int, why: str) -> None:
        settings = self.runner.settings
        delay = backoff_delay(attempt, settings.reconnect_backoff_initial_s, settings.reconnect_backoff_max_s)
        self.runner.log.warning("%s: %s; reconnecting in %.2fs (attempt %d)", self.runner.venue.name, why, delay,
                                attempt)  # fmt: skip
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
