"""The tests' port picker: ports no outgoing connection can take before the component under test binds them."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support import free_port


def test_free_ports_are_below_the_ephemeral_range_bindable_and_never_repeated() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
    for port in ports[:20]:  # each one can be bound right away
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
