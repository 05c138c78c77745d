"""Every listener the embedded stack opens binds loopback, and no component listens where it was not told to."""

from __future__ import annotations

from feed_handlers.instruments import EXCHANGES
from tests.security.conftest import SecuredStack
from tests.security.procnet import Listener, descendants, listeners, parse_proc_net

LOOPBACK = {"127.0.0.1", "::1"}


def _owners(secured: SecuredStack) -> dict[int, str]:
    """pid -> the component whose process tree it belongs to (run/<component>.pid), the supervisor's own
    pids as "k2"."""
    run = secured.stack.data_dir / "run"
    owner = dict.fromkeys(descendants(secured.supervisor_pid), "k2")
    for pid_file in run.glob("*.pid"):
        if pid_file.stem != "k2":
            owner.update(dict.fromkeys(descendants(int(pid_file.read_text())), pid_file.stem))
    return owner


def test_every_listener_of_k2_up_binds_loopback_and_belongs_to_a_known_component(secured_stack: SecuredStack) -> None:
    env = secured_stack.stack.env
    owners = _owners(secured_stack)
    found = listeners(list(owners))
    assert [f"{owners[s.pid]} on {s.address}:{s.port}" for s in found if s.address not in LOOPBACK] == []

    ports: dict[str, set[int]] = {}
    for sock in found:
        ports.setdefault(owners[sock.pid], set()).add(sock.port)
    port = {name: int(env[f"K2_{name.upper()}"]) for name in ("prefect_port", "flows_metrics_port", "exporter_port")}
    expected = {
        "broker": {int(env["K2_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])},
        "clickhouse": {int(env["K2_CLICKHOUSE_URL"].rsplit(":", 1)[1])},
        "exporter": {port["exporter_port"]},
        "prefect": {port["prefect_port"]},
        "flows": {port["flows_metrics_port"]},
        **{f"handler-{ex}": {int(env["K2_HANDLER_METRICS_PORT_BASE"]) + i} for i, ex in enumerate(EXCHANGES)},
    }
    # the fake exchanges: a WebSocket server per exchange on the configured ports, plus a REST server per
    # exchange for backfill on a port the OS picks (feed_handlers/replay/run.py)
    replay = ports.pop("replay", set())
    websockets = {int(env["K2_REPLAY_PORT_BASE"]) + i for i in range(len(EXCHANGES))}
    assert websockets <= replay and len(replay - websockets) == len(EXCHANGES), sorted(replay)
    # a new listener, or a new component with one, fails here until it is added (on loopback) above;
    # the supervisor itself ("k2") listens nowhere
    assert ports == expected
    assert set(owners.values()) == {"k2", "replay", *expected}


def test_proc_net_parsing_reads_addresses_in_kernel_byte_order() -> None:
    """Lines as the kernel prints them: 127.0.0.1:8123, 0.0.0.0:9000 (LISTEN) and an established socket."""
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1FBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1\n"
        "   1: 00000000:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1\n"
        "   2: 0100007F:1FBB 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3333 1\n"
    )
    assert parse_proc_net(tcp) == {1111: ("127.0.0.1", 8123), 2222: ("0.0.0.0", 9000)}
    tcp6 = (
        "  sl  local_address                         remote_address                        st tx_queue rx_queue "
        "tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000000000000000000001000000:0FA0 00000000000000000000000000000000:0000 0A 00000000:00000000 "
        "00:00000000 00000000     0        0 4444 1\n"
        "   1: 00000000000000000000000000000000:0FA1 00000000000000000000000000000000:0000 0A 00000000:00000000 "
        "00:00000000 00000000     0        0 5555 1\n"
        "   2: 0000000000000000FFFF00000100007F:0FA2 00000000000000000000000000000000:0000 0A 00000000:00000000 "
        "00:00000000 00000000     0        0 6666 1\n"
    )
    assert parse_proc_net(tcp6) == {4444: ("::1", 4000), 5555: ("::", 4001), 6666: ("127.0.0.1", 4002)}
    assert [Listener(1, a, 1).loopback for a in ("127.0.0.1", "::1", "0.0.0.0", "::")] == [True, True, False, False]
