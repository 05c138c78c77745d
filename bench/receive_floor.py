"""The receive floor: frames/s a handler's WebSocket client takes in when it does nothing with them.

A raw TCP server in another process (pinned to the other core) answers the opening handshake and then
writes every frame, pre-encoded as unmasked server text frames, in one buffer: sending costs it nothing
per frame. The client is the handlers' own ``WebSocketTransport`` (websockets, as in production), and
only calls ``recv()`` until it has them all. No parsing, no record, no Kafka: what any handler built on
``websockets`` pays per frame before its own work starts, next to the orjson ceiling.

    PYTHONPATH=. .venv/bin/python bench/receive_floor.py --trades 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import time
from collections.abc import Iterator, Sequence

from websockets.frames import Frame, Opcode
from websockets.utils import accept_key

from feed_handlers.exchanges import VENUES
from feed_handlers.runner import Runner
from feed_handlers.transport import WebSocketTransport


def encode_frames(frames: Sequence[bytes]) -> bytes:
    """``frames`` as consecutive unmasked text frames, as a server sends them (websockets' own serializer)."""
    return b"".join(Frame(Opcode.TEXT, payload).serialize(mask=False) for payload in frames)


def _serve(listener: socket.socket, stream: bytes, core: int) -> None:
    """Accept one client, complete its handshake, write ``stream``, then wait for it to hang up."""
    os.sched_setaffinity(0, {core})
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
        accept = accept_key(key.decode()).encode()
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
        conn.sendall(stream)
        while conn.recv(4096):  # the client's close frame, then EOF
            pass


async def _receive(url: str, n: int) -> float:
    connection = await WebSocketTransport().connect(url)
    start = time.perf_counter()
    for _ in range(n):
        await connection.recv()
    elapsed = time.perf_counter() - start
    await connection.close()
    return elapsed


async def _through_runner(url: str, n: int, venue: str) -> float:
    """Seconds from the first frame to the ``n``-th through the handlers' ``Runner`` (the venue's silence
    timeout and connection age limit watched), handing each to an ``on_frame`` that only counts it."""
    done = asyncio.Event()
    seen = [0, 0.0]  # frames, time of the first

    async def on_frame(frame: bytes | str, ts_received_ns: int, connection_id: int) -> bool:
        seen[0] += 1
        if seen[0] == 1:
            seen[1] = time.perf_counter()
        elif seen[0] == n:
            done.set()
        return False

    runner = Runner(VENUES[venue], url, ["BTCUSDT"], channel=VENUES[venue].trade_channels[0], on_frame=on_frame,
                    transport=WebSocketTransport())  # fmt: skip
    task = asyncio.create_task(runner.run())
    await done.wait()
    elapsed = time.perf_counter() - seen[1]
    await runner.stop()
    await task
    return elapsed


@contextlib.contextmanager
def serving(stream: bytes, server_core: int = 1) -> Iterator[str]:
    """A local WebSocket server (another process, pinned to ``server_core``) that writes ``stream``
    (``encode_frames``) to the one client it accepts; yields its URL."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = multiprocessing.get_context("fork").Process(target=_serve, args=(listener, stream, server_core))
        server.start()
        try:
            yield f"ws://127.0.0.1:{port}/"
        finally:
            server.join(10)
            server.kill()


def receive_floor(frames: Sequence[bytes], *, server_core: int = 1, runner_venue: str | None = None) -> float:
    """Frames/s through ``WebSocketTransport.recv`` alone, best of three connections; with ``runner_venue``,
    through the handlers' ``Runner`` for that venue instead."""
    stream = encode_frames(frames)
    best = float("inf")
    for _ in range(3):
        with serving(stream, server_core) as url:
            if runner_venue is None:
                best = min(best, asyncio.run(_receive(url, len(frames))))
            else:
                best = min(best, asyncio.run(_through_runner(url, len(frames), runner_venue)))
    return len(frames) / best


def main() -> None:
    from bench.handlers import ceiling, frames  # noqa: PLC0415 - the CLI reuses the handler bench's frames

    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--venues", default="binance,kraken,coinbase")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    for venue in args.venues.split(","):
        data = frames(venue, args.trades)
        top, received = ceiling(data), receive_floor(data)
        through_runner = receive_floor(data, runner_venue=venue)
        print(f"{venue:8s}: websockets recv() alone {received:,.0f} frames/s = {100 * received / top:.0f}% of the "
              f"orjson loads+dumps ceiling {top:,.0f}/s; through the handlers' Runner (watchdog included) "
              f"{through_runner:,.0f} frames/s")  # fmt: skip


if __name__ == "__main__":
    main()
