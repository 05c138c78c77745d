"""The generic runner against an in-memory transport: reconnects, 1008, silence, rotation, splitting."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from feed_handlers.exchanges import VENUES
from feed_handlers.runner import Runner, RunnerSettings, backoff_delay
from feed_handlers.transport import TransportClosed

FAST = RunnerSettings(
    rotation_drain_s=0.2,
    reconnect_backoff_initial_s=0.01,
    reconnect_backoff_max_s=0.05,
    policy_close_backoff_s=0.5,
    rotate_before_s=0.0,
    rotation_overlap_timeout_s=2.0,
    healthy_after_s=60.0,
)


#: How long the runner's on_frame takes over a frame whose text starts with "SLOW".
SLOW_S = 0.5


class FakeConn:
    def __init__(self, number: int) -> None:
        self.number = number
        self.sent: list[Any] = []
        self.sent_at: list[float] = []
        self.inbox: asyncio.Queue[bytes | str | TransportClosed] = asyncio.Queue()
        self.closed: tuple[int, str] | None = None
        self.opened_at = time.monotonic()
        self.closed_at = 0.0

    async def send(self, message: str) -> None:
        if self.closed:
            raise TransportClosed(*self.closed)
        self.sent.append(orjson.loads(message))
        self.sent_at.append(time.monotonic())

    async def recv(self) -> bytes | str:
        item = await self.inbox.get()
        if isinstance(item, TransportClosed):
            self.inbox.put_nowait(item)
            raise item
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self.closed_at = time.monotonic()
            self.inbox.put_nowait(TransportClosed(code, reason))

    def drop(self, code: int = 1006, reason: str = "") -> None:
        self.closed = (code, reason)
        self.inbox.put_nowait(TransportClosed(code, reason))


class FakeTransport:
    def __init__(self) -> None:
        self.connections: list[FakeConn] = []
        self.opened: asyncio.Queue[FakeConn] = asyncio.Queue()

    async def connect(self, url: str) -> FakeConn:
        conn = FakeConn(len(self.connections) + 1)
        self.connections.append(conn)
        self.opened.put_nowait(conn)
        return conn

    async def next(self) -> FakeConn:
        return await asyncio.wait_for(self.opened.get(), 5.0)


async def until(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def scenario(venue_changes: dict[str, Any], symbols: list[str], body: Callable[..., Awaitable[None]]) -> None:
    venue = dataclasses.replace(VENUES["kraken"], **{"max_messages_per_s": 1000.0, **venue_changes})
    frames: list[tuple[str, int]] = []

    async def on_frame(frame: bytes | str, ts: int, conn_id: int) -> bool:
        text = frame if isinstance(frame, str) else frame.decode()
        if text.startswith("SLOW"):  # handled for longer than the silence timeout / past the age limit
            await asyncio.sleep(SLOW_S)
            text += " handled"
        frames.append((text, conn_id))
        return frame == "SHUTDOWN"

    async def main() -> None:
        transport = FakeTransport()
        runner = Runner(
            venue, "ws://x", symbols, channel="trade", on_frame=on_frame, transport=transport, settings=FAST
        )
        task = asyncio.create_task(runner.run())
        try:
            await body(runner, transport, frames)
        finally:
            await runner.stop()
            await asyncio.wait_for(task, 5.0)

    asyncio.run(main())


def subscribed(conn: FakeConn) -> list[str]:
    return [s for m in conn.sent if m["method"] == "subscribe" for s in m["params"]["symbol"]]


def test_subscribes_delivers_and_resubscribes_after_a_drop() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        first = await transport.next()
        await until(lambda: bool(first.sent))
        assert first.sent == [
            {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": True},
             "req_id": first.sent[0]["req_id"]}
        ]  # fmt: skip
        first.inbox.put_nowait("a")
        first.drop()
        second = await transport.next()
        await until(lambda: bool(second.sent))
        assert subscribed(second) == ["BTC/USD", "ETH/USD"]
        second.inbox.put_nowait("b")
        await until(lambda: len(frames) == 2)
        assert [f for f, _ in frames] == ["a", "b"] and frames[0][1] != frames[1][1]

    scenario({}, ["BTC/USD", "ETH/USD"], body)


def test_policy_close_is_not_retried_in_a_loop(caplog: pytest.LogCaptureFixture) -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        first = await transport.next()
        first.drop(1008, "policy")
        closed_at = time.monotonic()
        second = await transport.next()
        assert second.opened_at - closed_at >= FAST.policy_close_backoff_s
        second.drop(1006, "gone")
        await transport.next()

    with caplog.at_level(logging.WARNING, logger="feed_handlers.runner"):
        scenario({}, ["BTC/USD"], body)
    # structured: the venue is a field of every record, not only words in the message
    assert [(r.levelname, getattr(r, "exchange", None), "1008" in r.getMessage()) for r in caplog.records] == [
        ("ERROR", "kraken", True), ("WARNING", "kraken", False),
    ]  # fmt: skip


def test_silence_watchdog_replaces_a_quiet_connection() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        first = await transport.next()
        second = await transport.next()
        assert first.closed == (1000, "silent")
        assert second.opened_at - first.opened_at >= 0.2

    scenario({"silence_timeout_s": 0.2}, ["BTC/USD"], body)


def test_a_connection_that_keeps_delivering_is_never_silent() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        conn = await transport.next()
        for i in range(16):  # 0.8 s of frames, one every 0.05 s: four silence periods, none silent
            conn.inbox.put_nowait(f"f{i}")
            await asyncio.sleep(0.05)
        await until(lambda: len(frames) == 16)
        assert [f for f, _ in frames] == [f"f{i}" for i in range(16)]
        assert conn.closed is None and transport.connections == [conn]

    scenario({"silence_timeout_s": 0.2}, ["BTC/USD"], body)


def test_time_spent_handling_a_frame_is_not_silence_and_is_never_interrupted() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        conn = await transport.next()
        conn.inbox.put_nowait("SLOW")  # handled for 0.5 s, more than twice the silence timeout
        conn.inbox.put_nowait("next")
        await until(lambda: len(frames) == 2)
        assert [f for f, _ in frames] == ["SLOW handled", "next"]
        assert conn.closed is None and transport.connections == [conn]
        first = conn  # ...and a read that then waits past the timeout still ends the connection
        await until(lambda: first.closed == (1000, "silent"))

    scenario({"silence_timeout_s": 0.2}, ["BTC/USD"], body)


def test_age_limit_passing_while_a_frame_is_handled_rotates_once_it_is_handled() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        old = await transport.next()
        old.inbox.put_nowait("SLOW")  # still being handled when the 0.3 s age limit passes
        new = await transport.next()
        assert frames == [("SLOW handled", frames[0][1])]  # the rotation waited for the frame
        new.inbox.put_nowait("from-new")
        await until(lambda: old.closed == (1000, "rotated"))
        assert [f for f, _ in frames] == ["SLOW handled", "from-new"]

    scenario({"max_connection_age_s": 0.3, "silence_timeout_s": None}, ["BTC/USD"], body)


def test_rotation_overlaps_then_closes_the_old_connection() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        old = await transport.next()
        new = await transport.next()  # opened at the age limit while old is still open
        await until(lambda: bool(new.sent))
        assert old.closed is None and subscribed(new) == ["BTC/USD"]
        old.inbox.put_nowait("from-old")
        await until(lambda: ("from-old", frames[-1][1]) in frames if frames else False)
        new.inbox.put_nowait("from-new")
        await until(lambda: old.closed == (1000, "rotated"))
        assert [f for f, _ in frames][:2] == ["from-old", "from-new"]

    scenario({"max_connection_age_s": 0.3, "silence_timeout_s": None}, ["BTC/USD"], body)


def test_rotation_keeps_reading_the_old_connection_for_a_while_after_the_new_one_delivers() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        old = await transport.next()
        new = await transport.next()
        await until(lambda: bool(new.sent))
        new.inbox.put_nowait("new-1")  # the new connection delivers first...
        await until(lambda: "new-1" in [f for f, _ in frames])
        old.inbox.put_nowait("old-in-flight")  # ...while the old one still had this on its way
        await until(lambda: old.closed == (1000, "rotated"))
        assert [f for f, _ in frames] == ["new-1", "old-in-flight"]
        assert old.closed_at - new.opened_at >= FAST.rotation_drain_s  # read for the drain time, then closed

    scenario({"max_connection_age_s": 0.3, "silence_timeout_s": None}, ["BTC/USD"], body)


def test_shutdown_notice_rotates_at_once() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        old = await transport.next()
        old.inbox.put_nowait("SHUTDOWN")
        new = await transport.next()
        new.inbox.put_nowait("hello")
        await until(lambda: old.closed == (1000, "rotated"))

    scenario({"silence_timeout_s": None}, ["BTC/USD"], body)


def test_symbols_split_over_connections_and_hot_changes() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        conns = [await transport.next() for _ in range(3)]
        await until(lambda: all(c.sent for c in conns))
        assert sorted(subscribed(c)[0] for c in conns) == ["A/USD", "C/USD", "E/USD"]
        assert sorted(map(subscribed, conns)) == [["A/USD", "B/USD"], ["C/USD", "D/USD"], ["E/USD"]]
        added, removed = await runner.update_symbols(["A/USD", "C/USD", "D/USD", "E/USD", "F/USD", "G/USD"])
        assert (added, removed) == (["F/USD", "G/USD"], ["B/USD"])
        first = next(c for c in conns if subscribed(c)[0] == "A/USD")
        last = next(c for c in conns if subscribed(c)[0] == "E/USD")
        await until(lambda: any(m["method"] == "unsubscribe" for m in first.sent))
        assert [m["params"]["symbol"] for m in first.sent if m["method"] == "unsubscribe"] == [["B/USD"]]
        # freed room is reused before opening a connection: F joins A's connection, G joins E's
        await until(lambda: len(first.sent) == 3 and len(last.sent) == 2)
        assert first.sent[2]["method"] == "subscribe" and first.sent[2]["params"]["symbol"] == ["F/USD"]
        assert last.sent[1]["params"]["symbol"] == ["G/USD"]
        assert len(transport.connections) == 3
        assert REGISTRY.get_sample_value("k2_feed_subscribed_symbols", {"exchange": "kraken"}) == 6
        await runner.update_symbols(["A/USD", "C/USD", "D/USD", "E/USD", "F/USD", "G/USD", "H/USD"])
        fourth = await transport.next()
        await until(lambda: bool(fourth.sent))
        assert subscribed(fourth) == ["H/USD"]
        await until(lambda: REGISTRY.get_sample_value("k2_feed_subscribed_symbols", {"exchange": "kraken"}) == 7)
        await runner.update_symbols(["C/USD", "D/USD", "E/USD", "G/USD", "H/USD"])
        assert REGISTRY.get_sample_value("k2_feed_subscribed_symbols", {"exchange": "kraken"}) == 5

    scenario({"max_streams_per_connection": 2, "silence_timeout_s": None}, [f"{c}/USD" for c in "ABCDE"], body)


def test_backoff_grows_to_its_cap_and_is_jittered() -> None:
    rng = random.Random(7)
    draws = {attempt: [backoff_delay(attempt, 0.5, 30.0, rng.uniform) for _ in range(400)] for attempt in range(1, 9)}
    for attempt, delays in draws.items():
        cap = min(30.0, 0.5 * 2**attempt)
        assert all(0.25 <= d <= cap for d in delays), attempt
        assert max(delays) > 0.9 * cap  # the range is used up to the cap...
        assert len(set(delays)) == len(delays)  # ...and spread, not one value for every handler
    assert backoff_delay(10**6, 0.5, 30.0, max) == 30.0  # a long outage never overflows the exponent
    assert backoff_delay(3, 0.5, 30.0, max) == 4.0  # the cap doubles per attempt: 0.5 * 2**3


def test_messages_to_the_venue_keep_under_its_rate() -> None:
    async def body(runner: Runner, transport: FakeTransport, frames: list[tuple[str, int]]) -> None:
        conn = await transport.next()
        await until(lambda: bool(conn.sent))
        for symbol in ("B/USD", "C/USD", "D/USD", "E/USD"):  # four changes at once: four subscribe messages
            await runner.update_symbols([*runner.symbols, symbol])
        await until(lambda: len(conn.sent) == 5)
        assert len(transport.connections) == 1  # no cap per connection on this venue: one connection takes all
        gaps = [b - a for a, b in zip(conn.sent_at, conn.sent_at[1:], strict=False)]
        assert min(gaps) >= 1 / 20 * 0.95, gaps  # 20 messages/s at most (timer granularity aside)

    scenario({"max_messages_per_s": 20.0, "silence_timeout_s": None}, ["A/USD"], body)
