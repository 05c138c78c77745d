"""``k2 up`` / ``k2 down`` / ``k2 status``: the embedded stack as supervised child processes.

Layout of the data directory::

    run/k2.pid            the supervisor (``k2 up``); its presence while alive means "running"
    run/<component>.pid   each child process
    logs/<component>.log  each child's output
    state.json            endpoints and pids, written once everything is healthy
    clickhouse/           chDB data (survives down/up); the broker keeps topics in memory only
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from feed_handlers.instruments import load_instruments
from k2 import chclient
from k2.embedded.components import Component, Feeds, components, port_in_use
from k2.errors import StackError
from k2.migrations import default_sql_dir, migrate
from k2.settings import Settings
from k2.topics import ensure_topics, wanted_topics

__all__ = ["Stack", "read_pid", "status"]

log = logging.getLogger("k2.stack")

_STOP_GRACE_S = 15.0
_ENDPOINT_SETTING = {
    "broker": "K2_KAFKA_BOOTSTRAP",
    "clickhouse": "K2_CLICKHOUSE_URL",
    "prefect": "K2_PREFECT_PORT",
    "flows": "K2_FLOWS_METRICS_PORT",
}
_RESTART_BACKOFF_MAX_S = 30.0


def read_pid(path: Path) -> int | None:
    """The pid in ``path`` if that process is alive; a stale file is removed and None returned."""
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        log.warning("removing stale pid file %s (process %d is gone)", path, pid)
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        return pid
    return pid


def _gone(pid_file: Path) -> bool:
    return read_pid(pid_file) is None


def _wait(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


@dataclass
class _Child:
    component: Component
    process: subprocess.Popen[bytes]
    restarts: int = 0
    next_restart: float = 0.0
    log_file: Any = field(default=None, repr=False)


class Stack:
    """Starts, watches and stops the embedded components for one data directory."""

    def __init__(self, settings: Settings, feeds: Feeds | None = None, flows: bool = False) -> None:
        self.settings = settings
        self.feeds = feeds or Feeds()
        self.flows = flows
        self.data_dir = settings.data_dir.resolve()
        self.run_dir = self.data_dir / "run"
        self.log_dir = self.data_dir / "logs"
        instruments = load_instruments(settings.instruments) if feeds is not None else None
        self.components = components(settings, instruments, self.feeds, flows)
        self._children: dict[str, _Child] = {}
        self._stopping = False

    # -- up --------------------------------------------------------------------------------------

    def check_can_start(self) -> None:
        load_instruments(self.settings.instruments)  # a config error stops us before anything starts
        pid = read_pid(self.run_dir / "k2.pid")
        if pid is not None:
            raise StackError(f"k2 is already running (pid {pid}, data dir {self.data_dir}); run `k2 down` first")
        for comp in self.components:
            stale = read_pid(self.run_dir / f"{comp.name}.pid")
            if stale is not None:
                raise StackError(
                    f"a {comp.name} from an earlier k2 (pid {stale}) is still running without its "
                    f"supervisor; run `k2 down --data-dir {self.data_dir}` to stop it"
                )
            if port_in_use(comp.host, comp.port):
                raise StackError(
                    f"port {comp.port} on {comp.host} is already in use, so the {comp.name} cannot start; "
                    f"stop what listens there or point {_ENDPOINT_SETTING[comp.name]} elsewhere"
                )

    def up(self, on_ready: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Run in the foreground until SIGTERM/SIGINT; restart children that die."""
        self.check_can_start()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "k2.pid").write_text(str(os.getpid()))
        (self.data_dir / "state.json").unlink(missing_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            for comp in self.components:
                self._start(comp)
                if not _wait(partial(self._healthy_or_dead, comp), self.settings.startup_timeout_s):
                    raise StackError(f"{comp.name} did not become healthy in {self.settings.startup_timeout_s:.0f}s")
                if self._children[comp.name].process.poll() is not None:
                    raise StackError(f"{comp.name} exited at start; see {self.log_dir / (comp.name + '.log')}")
                self._after_healthy(comp.name)
            state = self._write_state()
            if on_ready is not None:
                on_ready(state)
            while not self._stopping:
                self._watch()
                time.sleep(0.2)
            return 0
        finally:
            self._stop_children()
            (self.run_dir / "k2.pid").unlink(missing_ok=True)
            (self.data_dir / "state.json").unlink(missing_ok=True)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("k2: %s received, stopping", signal.Signals(signum).name)
        self._stopping = True

    def _healthy_or_dead(self, comp: Component) -> bool:
        return self._children[comp.name].process.poll() is not None or comp.healthy()

    def _start(self, comp: Component) -> None:
        log_file = (self.log_dir / f"{comp.name}.log").open("ab")
        env = {**os.environ, **dict(comp.env)} if comp.env else None
        process = subprocess.Popen(
            comp.command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        (self.run_dir / f"{comp.name}.pid").write_text(str(process.pid))
        previous = self._children.get(comp.name)
        self._children[comp.name] = _Child(comp, process, previous.restarts if previous else 0, 0.0, log_file)
        log.info("k2: started %s (pid %d)", comp.name, process.pid)

    def _after_healthy(self, name: str) -> None:
        """Topics as soon as the broker is up (before any consumer could auto-create them with one
        partition), the ClickHouse schema as soon as ClickHouse is."""
        if name == "broker":
            instruments = load_instruments(self.settings.instruments)
            created = asyncio.run(ensure_topics(self.settings.kafka_bootstrap, wanted_topics(instruments)))
            if created:
                log.info("k2: created topics %s", ", ".join(created))
        elif name == "clickhouse":
            client = chclient.connect(self.settings)
            variables = {"KAFKA_BROKER_LIST": self.settings.kafka_brokers_for_clickhouse}
            applied = migrate(client, default_sql_dir(), variables)
            log.info("k2: %d migrations applied", len(applied))

    def _watch(self) -> None:
        for child in self._children.values():
            code = child.process.poll()
            if code is None or self._stopping:
                continue
            now = time.monotonic()
            if child.next_restart == 0.0:
                delay = min(_RESTART_BACKOFF_MAX_S, 0.5 * 2**child.restarts)
                child.next_restart = now + delay
                log.error("k2: %s exited with code %s; restarting in %.1fs", child.component.name, code, delay)
            elif now >= child.next_restart:
                child.restarts += 1
                child.log_file.close()
                self._start(child.component)
                if _wait(partial(self._healthy_or_dead, child.component), self.settings.startup_timeout_s):
                    self._after_healthy(child.component.name)  # a restarted broker has no topics (memory)
                self._write_state()

    def _stop_children(self) -> None:
        for child in reversed(list(self._children.values())):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.error("k2: %s did not stop in %.0fs; killing it", child.component.name, _STOP_GRACE_S)
                child.process.kill()
                child.process.wait()
            child.log_file.close()
            (self.run_dir / f"{child.component.name}.pid").unlink(missing_ok=True)

    def _write_state(self) -> dict[str, Any]:
        state = {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "feeds": {"mode": self.feeds.mode, "replay_dir": str(self.feeds.replay_dir or "")},
            "endpoints": _endpoints(self.settings, [c.name for c in self.components]),
            "components": {
                n: {
                    "pid": c.process.pid,
                    "endpoint": c.component.endpoint,
                    "host": c.component.host,
                    "port": c.component.port,
                    "health_url": c.component.health_url,
                }
                for n, c in self._children.items()
            },
        }
        tmp = self.data_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.data_dir / "state.json")
        return state

    # -- detach / down ---------------------------------------------------------------------------

    def up_detached(self) -> dict[str, Any]:
        """Start ``k2 up`` in the background and return its state once it is ready."""
        self.check_can_start()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "state.json").unlink(missing_ok=True)
        log_path = self.log_dir / "k2.log"
        feeds = ["--feeds", self.feeds.mode, "--speed", self.feeds.speed]
        if self.feeds.replay_dir is not None:
            feeds += ["--replay", str(self.feeds.replay_dir.resolve())]
        if not self.feeds.loop:
            feeds.append("--no-loop")
        if not self.flows:
            feeds.append("--no-flows")
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "k2.cli", "up", "--data-dir", str(self.data_dir), *feeds],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        state_file = self.data_dir / "state.json"
        ready = _wait(lambda: state_file.exists() or process.poll() is not None, self.settings.startup_timeout_s * 2)
        if not ready or not state_file.exists():
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise StackError("k2 up failed to start:\n" + "\n".join(tail))
        return dict(json.loads(state_file.read_text()))

    def down(self) -> list[str]:
        """Stop the supervisor (which stops its children) and any orphaned child; return what stopped."""
        stopped: list[str] = []
        pid = read_pid(self.run_dir / "k2.pid")
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _wait(lambda: read_pid(self.run_dir / "k2.pid") is None, _STOP_GRACE_S * 3):
                raise StackError(f"k2 (pid {pid}) did not stop within {_STOP_GRACE_S * 3:.0f}s")
            stopped.append(f"k2 (pid {pid})")
        for pid_file in sorted(self.run_dir.glob("*.pid")) if self.run_dir.exists() else []:
            name = pid_file.stem
            orphan = read_pid(pid_file)
            if orphan is not None and name != "k2":
                os.kill(orphan, signal.SIGTERM)
                _wait(partial(_gone, pid_file), _STOP_GRACE_S)
                pid_file.unlink(missing_ok=True)
                stopped.append(f"{name} (pid {orphan})")
        return stopped


def _endpoints(settings: Settings, names: Iterable[str] = ()) -> dict[str, str]:
    names = set(names)
    endpoints = {"kafka": settings.kafka_bootstrap, "clickhouse": settings.clickhouse_url}
    if "exporter" in names:
        endpoints["metrics"] = f"http://{settings.exporter_host}:{settings.exporter_port}/metrics"
    if "prefect" in names:
        endpoints["prefect"] = f"http://127.0.0.1:{settings.prefect_port}"
    return endpoints


def status(settings: Settings) -> dict[str, Any]:
    """Health of every component as seen now, plus the endpoints clients should use."""
    stack = Stack(settings)
    supervisor = read_pid(stack.run_dir / "k2.pid")
    known = {c.name: c for c in stack.components}
    state_file = stack.data_dir / "state.json"
    if supervisor is not None and state_file.exists():
        for name, info in json.loads(state_file.read_text())["components"].items():
            known.setdefault(
                name, Component(name, (), info["host"], info["port"], info["endpoint"], info["health_url"])
            )
    report: dict[str, Any] = {
        "running": supervisor is not None,
        "supervisor_pid": supervisor,
        "data_dir": str(stack.data_dir),
        "endpoints": _endpoints(settings, known),
        "components": {},
    }
    for comp in known.values():
        pid = read_pid(stack.run_dir / f"{comp.name}.pid")
        healthy = comp.healthy()
        report["components"][comp.name] = {
            "pid": pid,
            "endpoint": comp.endpoint,
            "health": "healthy" if healthy else ("unhealthy" if pid is not None else "down"),
        }
    report["healthy"] = all(c["health"] == "healthy" for c in report["components"].values())
    return report
