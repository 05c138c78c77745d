"""Exchange-side faults, end to end: fake exchange → handler → broker → embedded ClickHouse → silver.

- 100 disconnects at random moments (seeded), cut without a close frame or closed with one, per venue.
- The exchange goes silent with the socket open: the handler's watchdog (Kraken, Coinbase: no frame for
  ``silence_timeout_s``) or WebSocket keepalive (Binance, which has no application heartbeat: a peer that
  stops answering pings) detects it within its bound, reconnects and recovers.

Expected everywhere: silver FINAL holds every trade the exchange wrote (Kraken and Coinbase replay recent
trades on subscribe, so even what a cut swallowed comes back), each once; Binance cannot replay, so what a cut
swallowed is lost, and each such trade, like every trade released while we were away, is counted by
``k2_feed_missing_trades_total``: unseen == counted, nothing hidden.
"""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

from feed_handlers.transport import WebSocketTransport
from tests.reliability.feeds import FAST, FeedRun, mean_max, run_feed, settle
from tests.support import Stack

DISCONNECTS = 100
SEED = 20261106
VENUES = ("binance", "kraken", "coinbase")
REPLAYS = {"binance": False, "kraken": True, "coinbase": True}  # the venue sends recent trades on subscribe
#: a reconnect takes the backoff (at most ``reconnect_backoff_max_s``) plus a local connect and subscribe
RECONNECT_BOUND_S = FAST.reconnect_backoff_max_s + 0.5


@pytest.mark.integration
@pytest.mark.parametrize("exchange", VENUES)
def test_random_disconnects_lose_and_duplicate_nothing_the_exchange_sent(stack: Stack, exchange: str) -> None:
    rng = random.Random(f"{SEED}-{exchange}")
    kinds: dict[str, int] = {}

    async def disconnect_at_random(run: FeedRun) -> None:
        for _ in range(DISCONNECTS):
            await run.trades_flow(rng.randint(1, 6))  # a random moment: after 1-6 more trades
            kind = rng.choice(["cut", "close 1001", "close 1011"])
            kinds[kind] = kinds.get(kind, 0) + 1
            connections = run.fake.connections
            started = time.monotonic()
            if kind == "cut":
                await run.fake.drop_connections()  # no close frame: a network failure
            else:
                await run.fake.close_all(int(kind.split()[1]), "fault injection")
            await run.fake.wait_until(lambda c=connections: run.fake.connections > c and run.fake.active > 0)  # type: ignore[misc]
            run.recover_s.append(time.monotonic() - started)

    started = time.monotonic()
    run = asyncio.run(run_feed(stack, exchange, "RD", disconnect_at_random))
    figures = settle(stack, run)
    print(f"{exchange}: disconnects={DISCONNECTS} {kinds} connections={run.fake.connections} {figures.line()} "
          f"reconnect {mean_max(run.recover_s)} run={time.monotonic() - started:.1f}s")  # fmt: skip

    assert run.fake.connections == DISCONNECTS + 1
    assert (figures.duplicated, figures.duplicated_final) == (0, 0)
    assert max(run.recover_s) <= RECONNECT_BOUND_S
    if REPLAYS[exchange]:
        assert not figures.lost_keys, f"sent, never stored: {sorted(figures.lost_keys)[:5]}"
    assert figures.lost_keys <= figures.unseen_keys | figures.outside_span_keys, "a lost trade outside every gap"
    assert figures.missing_counted == figures.unseen, "a trade we never saw was not counted (or one was miscounted)"


#: Kraken and Coinbase: the silence watchdog (production: 10 s); Binance: keepalive pings (production: every
#: 20 s, 20 s to answer). Shortened here; the bound is the same formula.
SILENCE_TIMEOUT_S = 1.0
PING_INTERVAL_S, PING_TIMEOUT_S = 0.5, 0.5
HEARTBEAT_S = 0.1  # the fake's heartbeat interval (Kraken, Coinbase)


@pytest.mark.integration
@pytest.mark.parametrize("exchange", VENUES)
def test_an_exchange_gone_silent_is_detected_within_its_bound_and_recovered(stack: Stack, exchange: str) -> None:
    detect_s: list[float] = []
    resume_s: list[float] = []

    async def go_silent(run: FeedRun) -> None:
        for _ in range(3):
            await run.trades_flow(5)
            connections = run.fake.connections
            started = time.monotonic()
            if exchange == "binance":  # no application heartbeat: a quiet stream is normal, a dead peer is not
                run.fake.hang_connections()
            else:  # socket open, protocol pings answered, not a frame more: no trades, heartbeats, acks
                run.fake.pause(math.inf)
            await run.fake.wait_until(lambda c=connections: run.fake.connections > c)  # type: ignore[misc]
            detect_s.append(time.monotonic() - started)
            run.fake.pause(0)  # the exchange answers the new connection
            await run.trades_flow(1)
            resume_s.append(time.monotonic() - started)

    started = time.monotonic()
    transport = WebSocketTransport(ping_interval_s=PING_INTERVAL_S, ping_timeout_s=PING_TIMEOUT_S, close_timeout_s=0.5)
    watchdog = None if exchange == "binance" else SILENCE_TIMEOUT_S
    run = asyncio.run(run_feed(stack, exchange, "RS", go_silent, venue_changes={"silence_timeout_s": watchdog},
                               transport=transport))  # fmt: skip
    figures = settle(stack, run)
    print(f"{exchange}: silent 3 times, detected+reconnected {mean_max(detect_s)}, trades again {mean_max(resume_s)} "
          f"{figures.line()} run={time.monotonic() - started:.1f}s")  # fmt: skip

    if exchange == "binance":  # a ping goes out within an interval; no pong within the timeout: closed
        low, high = PING_TIMEOUT_S - 0.1, PING_INTERVAL_S + PING_TIMEOUT_S + 0.5 + FAST.reconnect_backoff_max_s + 0.3
    else:  # the last frame came at most one heartbeat before the silence began
        low, high = SILENCE_TIMEOUT_S - HEARTBEAT_S - 0.05, SILENCE_TIMEOUT_S + FAST.reconnect_backoff_max_s + 0.3
    assert all(low <= d <= high for d in detect_s), (low, detect_s, high)
    assert run.fake.connections == 4
    assert (figures.duplicated, figures.duplicated_final) == (0, 0)
    if REPLAYS[exchange]:
        assert not figures.lost_keys
    assert figures.lost_keys <= figures.unseen_keys | figures.outside_span_keys
    assert figures.missing_counted == figures.unseen
