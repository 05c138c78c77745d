"""Listening TCP sockets of a process tree, read from /proc (Linux; psutil is not a dependency).

``/proc/<pid>/net/tcp{,6}`` lists every socket of the network namespace with its inode; a process owns
the sockets whose inodes its ``/proc/<pid>/fd`` links point at (``socket:[inode]``).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Listener", "descendants", "listeners", "parse_proc_net"]

_PROC = Path("/proc")
_LISTEN = "0A"  # TCP_LISTEN in include/net/tcp_states.h


@dataclass(frozen=True)
class Listener:
    pid: int
    address: str  # "127.0.0.1", "::1", "0.0.0.0", "::"
    port: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback


def _address(hex_address: str) -> str:
    """The kernel prints each 32-bit word of the address in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_proc_net(text: str) -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of the listening sockets in one /proc/net/tcp or tcp6 table."""
    out: dict[int, tuple[str, int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], int(fields[9])
        if state == _LISTEN:
            hex_address, hex_port = local.split(":")
            out[inode] = (_address(hex_address), int(hex_port, 16))
    return out


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and parentheses
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, however deep (sessions do not matter, parents do)."""
    tree = _children()
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(_PROC / str(pid) / "fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(_PROC / str(pid) / "fd" / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listeners(pids: list[int]) -> list[Listener]:
    """Every listening TCP socket (IPv4 and IPv6) held by one of ``pids``."""
    found: list[Listener] = []
    for pid in pids:
        table: dict[int, tuple[str, int]] = {}
        for name in ("tcp", "tcp6"):
            try:
                table.update(parse_proc_net((_PROC / str(pid) / "net" / name).read_text()))
            except OSError:
                continue
        for inode in _socket_inodes(pid) & set(table):
            found.append(Listener(pid, *table[inode]))
    return found
