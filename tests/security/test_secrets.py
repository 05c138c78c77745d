"""Secrets come from the environment only and show up nowhere: not in logs, files, command lines, status
output, ``repr(settings)`` or error messages."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from k2 import cli
from k2.embedded.http_server import _Handler
from k2.errors import ConfigError
from k2.logs import configure
from k2.settings import Settings, load_settings
from offload.run import describe_settings
from tests.security.conftest import SecuredStack
from tests.security.procnet import descendants
from tests.support import wait_for

#: a setting holding one of these, or a database URL (which may carry a password), must be a SecretStr
SECRET_FIELD = re.compile(r"password|secret|credential|token|_url$|_uri$")
#: URLs whose services take their credentials from settings of their own (clickhouse_user/_password)
NOT_SECRET = {"clickhouse_url", "prefect_api_url"}


def _secret_fields() -> list[str]:
    return [name for name, f in Settings.model_fields.items() if f.annotation is SecretStr]


def _all_secrets() -> dict[str, str]:
    """A distinct value for every secret setting."""
    return {f"K2_{name.upper()}": f"{name}-value-do-not-print" for name in _secret_fields()}


def _with_urls(values: dict[str, str]) -> dict[str, str]:
    """The database URL settings as URLs whose password is the secret."""
    return {k: f"postgresql://k2:{v}@db/k2" if k.endswith(("_URL", "_URI")) else v for k, v in values.items()}


# -- the running stack -------------------------------------------------------------------------------


def _client(secured: SecuredStack, password: str) -> Any:
    port = int(secured.stack.clickhouse_url.rsplit(":", 1)[1])
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, password=password)


def _trades_in_silver(secured: SecuredStack) -> None:
    """Replayed trades went exchange -> handler -> broker -> ClickHouse: every component has worked."""
    client = _client(secured, secured.secrets["K2_CLICKHOUSE_PASSWORD"])
    wait_for(lambda: client.command("SELECT count() FROM k2.silver_trades") > 0, 60, "trades in silver")


def test_clickhouse_password_is_required_and_used_by_the_stack(secured_stack: SecuredStack) -> None:
    with pytest.raises(DatabaseError, match="Authentication failed"):
        _client(secured_stack, "not-the-password")
    _trades_in_silver(secured_stack)
    metrics = f"http://127.0.0.1:{secured_stack.stack.env['K2_EXPORTER_PORT']}/metrics"

    def exporter_up() -> bool:
        with urllib.request.urlopen(metrics, timeout=30) as response:
            return "k2_clickhouse_up 1.0" in response.read().decode().splitlines()

    wait_for(exporter_up, 30, "the exporter logged in to ClickHouse")


def test_no_secret_in_logs_files_command_lines_or_status(secured_stack: SecuredStack) -> None:
    stack, values = secured_stack.stack, secured_stack.secrets
    processes = _processes(descendants(secured_stack.supervisor_pid))
    # every component the stack runs was read (a short-lived helper may end before it is) ...
    state = json.loads((stack.data_dir / "state.json").read_text())
    components = {name: c["pid"] for name, c in state["components"].items()}
    assert {n: pid for n, pid in components.items() if pid not in processes} == {}
    assert secured_stack.supervisor_pid in processes
    # ... the secrets did reach every process (else the rest proves nothing) ...
    for pid, (environ, _) in processes.items():
        assert all(f"{k}={v}".encode() in environ.split(b"\0") for k, v in values.items()), pid
    # ... and every component has been at work with them (exchange -> handler -> broker -> ClickHouse)
    _trades_in_silver(secured_stack)

    def leaks(data: bytes) -> list[str]:
        return [name for name, value in values.items() if value.encode() in data]

    def content(file: Path) -> bytes:
        try:
            return file.read_bytes()
        except (FileNotFoundError, IsADirectoryError):  # a temporary file, gone since the listing
            return b""

    # logs, state.json, pid files, chDB's data, Prefect's database, the offload state
    files = [Path(d, f) for d, _, names in os.walk(stack.data_dir) for f in names]  # walk skips vanished dirs
    assert any(f.parent.name == "logs" for f in files) and (stack.data_dir / "state.json") in files
    found = {str(f.relative_to(stack.data_dir)): leaks(content(f)) for f in files}
    assert {f: names for f, names in found.items() if names} == {}
    # passed by environment, never as arguments (/proc/<pid>/cmdline is readable by every local user)
    command_lines = {pid: leaks(cmdline) for pid, (_, cmdline) in processes.items()}
    assert {pid: names for pid, names in command_lines.items() if names} == {}
    status = stack.k2("status", "--json", check=False)  # exit 1 if a probe is slow on a busy machine: not ours
    assert json.loads(status.stdout)["running"] is True
    assert leaks((status.stdout + status.stderr).encode()) == []


def _processes(pids: list[int]) -> dict[int, tuple[bytes, bytes]]:
    """pid -> (environ, cmdline) of those still running: a helper process may exit after the listing."""
    found = {}
    for pid in pids:
        try:
            found[pid] = (Path(f"/proc/{pid}/environ").read_bytes(), Path(f"/proc/{pid}/cmdline").read_bytes())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


# -- settings, logs, errors, command line ----------------------------------------------------------------


def test_every_secret_setting_is_a_secret_string() -> None:
    """A new password, key, token or database URL setting must be a SecretStr, or this fails."""
    candidates = {name for name in Settings.model_fields if SECRET_FIELD.search(name)} - NOT_SECRET
    assert candidates == set(_secret_fields()) == {
        "clickhouse_password", "iceberg_catalog_uri", "iceberg_s3_secret_access_key", "offload_state_url",
        "iceberg_rest_credential",
    }  # fmt: skip
    for name in _secret_fields():
        assert Settings.model_fields[name].default == SecretStr(""), f"{name} ships a default value"


def test_settings_show_no_secret_but_hand_it_to_clients() -> None:
    secrets = _all_secrets()
    settings = load_settings(_with_urls(secrets))
    shown = [repr(settings), str(settings), f"{settings}", settings.model_dump_json(), str(settings.model_dump())]
    shown.append(str(describe_settings(settings)))  # prints the catalog and state URLs, passwords redacted
    for text in shown:
        assert [v for v in secrets.values() if v in text] == [], text
    assert settings.clickhouse_password.get_secret_value() == secrets["K2_CLICKHOUSE_PASSWORD"]
    assert settings.state_url == f"postgresql://k2:{secrets['K2_OFFLOAD_STATE_URL']}@db/k2"
    assert describe_settings(settings)["state"] == "postgresql://k2:***@db/k2"


def test_logs_show_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(_all_secrets())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for json_lines in (True, False):
            configure(json=json_lines)
            log = logging.getLogger("k2.test")
            log.info("settings: %s", settings)
            log.warning("as a field", extra={"settings": settings, "password": settings.clickhouse_password})
            try:
                raise RuntimeError(f"failed with {settings!r}")
            except RuntimeError:
                log.exception("and in a traceback")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    logged = capsys.readouterr().err
    assert logged.count("**********") >= 6
    assert [v for v in _all_secrets().values() if v in logged] == []


def test_config_errors_do_not_echo_values() -> None:
    secret = "a-secret-typed-into-the-wrong-variable"
    with pytest.raises(ConfigError) as invalid:
        load_settings({"K2_CLICKHOUSE_PASSWORD": secret, "K2_STARTUP_TIMEOUT_S": secret})
    with pytest.raises(ConfigError) as unknown:
        load_settings({"K2_CLICKHOUSE_PASSWROD": secret})
    assert "K2_STARTUP_TIMEOUT_S" in str(invalid.value) and "K2_CLICKHOUSE_PASSWROD" in str(unknown.value)
    assert secret not in str(invalid.value) + str(unknown.value)


def test_no_command_line_option_takes_a_secret() -> None:
    """Secrets come from the environment: an argument would show in `ps` and shell history."""

    def options(parser: argparse.ArgumentParser) -> list[str]:
        out = []
        for action in parser._actions:
            out += action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    out += options(sub)
        return out

    found = options(cli._parser())
    assert "--data-dir" in found and "--metrics-port" in found  # the walk reaches the subcommands
    assert [o for o in found if re.search(r"password|secret|credential|token|key", o)] == []


def test_embedded_clickhouse_request_log_keeps_no_query_string(caplog: pytest.LogCaptureFixture) -> None:
    """Bound values (cold DDL binds an S3 key) and a `password` URL parameter travel in the query string."""
    handler = SimpleNamespace(address_string=lambda: "127.0.0.1")
    request = "POST /?query=CREATE&param_secret=s3-key-do-not-print&password=pw-do-not-print HTTP/1.1"
    with caplog.at_level(logging.DEBUG, logger="k2.embedded.http_server"):
        _Handler.log_message(handler, '"%s" %s %s', request, "200", "-")  # type: ignore[arg-type]
    assert caplog.messages == ['127.0.0.1 "POST /?... HTTP/1.1" 200 -']
