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
import multiprocessing
import os
import socket
import time
from collections.abc import Sequence

from websockets.frames import Frame, Opcode
from websockets.utils import accept_key

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


def receive_floor(frames: Sequence[bytes], *, server_core: int = 1) -> float:
    """Frames/s through ``WebSocketTransport.recv`` alone, best of three connections."""
    stream = encode_frames(frames)
    best = float("inf")
    for _ in range(3):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            server = multiprocessing.get_context("fork").Process(target=_serve, args=(listener, stream, server_core))
            server.start()
            try:
                best = min(best, asyncio.run(_receive(f"ws://127.0.0.1:{port}/", len(frames))))
            finally:
                server.join(10)
                server.kill()
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
        print(f"{venue:8s}: websockets recv() alone {received:,.0f} frames/s = {100 * received / top:.0f}% of the "
              f"orjson loads+dumps ceiling {top:,.0f}/s")  # fmt: skip


if __name__ == "__main__":
    main()
