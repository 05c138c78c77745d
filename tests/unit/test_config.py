"""Settings and instruments.yaml are strict: a mistake names the variable, or the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from feed_handlers.instruments import load_instruments
from k2.errors import ConfigError
from k2.settings import load_settings
from tests.support import REPO

GOOD = (REPO / "config" / "instruments.yaml").read_text()


def test_defaults_are_loopback_and_env_overrides() -> None:
    settings = load_settings({})
    assert (settings.kafka_bootstrap, settings.clickhouse_url) == ("127.0.0.1:9092", "http://127.0.0.1:8123")
    assert settings.kafka_linger_ms == 25
    custom = load_settings({"K2_KAFKA_BOOTSTRAP": "redpanda:9092", "K2_KAFKA_IDEMPOTENCE": "true", "OTHER": "x",
                            "K2_KAFKA_LINGER_MS": "5"})  # fmt: skip
    assert (custom.kafka_bootstrap, custom.kafka_idempotence, custom.kafka_brokers_for_clickhouse,
            custom.kafka_linger_ms) == ("redpanda:9092", True, "redpanda:9092", 5)  # fmt: skip


def test_unknown_or_invalid_settings_are_errors() -> None:
    with pytest.raises(ConfigError, match="unknown environment variable K2_KAFKA_BOOTSRAP"):
        load_settings({"K2_KAFKA_BOOTSRAP": "x:1"})
    with pytest.raises(ConfigError, match="K2_STARTUP_TIMEOUT_S"):
        load_settings({"K2_STARTUP_TIMEOUT_S": "soon"})


def test_shipped_instruments_load() -> None:
    instruments = load_instruments(REPO / "config" / "instruments.yaml")
    assert [(i.symbol, i.canonical) for i in instruments.exchanges["binance"].symbols][0] == ("BTCUSDT", "BTC-USDT")
    assert [(i.symbol, i.canonical) for i in instruments.exchanges["kraken"].symbols][0] == ("BTC/USD", "BTC-USD")
    assert instruments.exchanges["binance"].partitions == 40


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("    channel: trade            # trade | aggTrade", "    chanel: trade", ":12: exchanges.binance.chanel: Extra"),
        ("    partitions: 20\n    symbols:\n      - BTC/USD", "    partitions: 0\n    symbols:\n      - BTC/USD",
         ":22: exchanges.kraken.partitions: Input should be greater than or equal to 1"),
        ("      - ETH-USD", "      - eth-usd", ":33: exchanges.coinbase.symbols.1.symbol: Value error, 'eth-usd' is not a coinbase symbol"),
        ("      - SOLUSDT: SOL-USDT", "      - SOLUSDT: SOLUSDT", ":17: exchanges.binance.symbols.2.canonical: String should match"),
        ("  kraken:", "  krakn:", ":18: exchanges.krakn: Input should be 'binance', 'kraken' or 'coinbase'"),
        # a key holding a newline is shown escaped: one problem stays one line (found by test_fuzz_config)
        ("    channel: trade            # trade | aggTrade", '    channel: trade\n    "\\n": 1',
         ":13: exchanges.binance.'\\n': Extra inputs are not permitted"),
        ("    channel: trade            # trade | aggTrade", "    channel: bookTicker",
         ":12: exchanges.binance.channel: Value error, 'bookTicker' is not a binance trade channel (trade | aggTrade)"),
        ("    channel: market_trades", "    channel: matches",
         ":29: exchanges.coinbase.channel: Value error, 'matches' is not a coinbase trade channel (market_trades)"),
        ("      - ETH-USD", "      - ETH-USD\n      - BTC-USD",
         ":34: exchanges.coinbase.symbols.2.symbol: Value error, 'BTC-USD' is listed twice (item 0)"),
        ("      - ETHUSDT: ETH-USDT", "      - ETHUSDT: BTC-USDT",
         ":16: exchanges.binance.symbols.1.canonical: Value error, 'BTC-USDT' is already the canonical of item 0"),
        ("    partitions: 40", "    partitions: 40\n    partitions: 4", ":14: not valid YAML: key 'partitions' given twice in one mapping"),
    ],
)  # fmt: skip
def test_bad_lines_name_file_line_and_key(tmp_path: Path, old: str, new: str, error: str) -> None:
    assert old in GOOD
    path = tmp_path / "instruments.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError) as excinfo:
        load_instruments(path)
    assert f"{path}{error}" in str(excinfo.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="instruments file not found"):
        load_instruments(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges:\n  binance: [\n")
    with pytest.raises(ConfigError, match=rf"{bad}:3: not valid YAML"):
        load_instruments(bad)
