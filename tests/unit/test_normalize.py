"""`k2 normalize`: raw frames in, one record per trade out; malformed input counted on stderr, exit 0."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from tests.support import K2, REPO

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_normalize_coinbase_frames_with_garbage_and_repeats() -> None:
    frames = (FIXTURES / "coinbase" / "advanced_trade.jsonl").read_bytes()
    stdin = frames + b"not json\n\n" + frames  # repeated frames: deduplicated like the live handler
    result = subprocess.run([*K2, "normalize", "coinbase"], input=stdin, capture_output=True, cwd=REPO, timeout=60)
    assert result.returncode == 0
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    keys = {"exchange", "symbol", "canonical_symbol", "trade_id", "price", "quantity", "side", "ts_event_ns",
            "ts_received_ns"}  # fmt: skip
    assert all(keys <= r.keys() for r in records)
    assert len({(r["symbol"], r["trade_id"]) for r in records}) == len(records)
    btc = [r for r in records if r["symbol"] == "BTC-USD"]
    assert btc[0] == {
        **btc[0],
        "exchange": "coinbase", "canonical_symbol": "BTC-USD", "trade_id": "1068571991", "price": "65090.99",
        "quantity": "0.00310335", "side": "sell", "ts_event_ns": 1786309475345704000, "maker_side": "BUY",
    }  # fmt: skip
    assert [int(r["trade_id"]) for r in btc] == sorted(int(r["trade_id"]) for r in btc)
    stderr = result.stderr.decode()
    assert "malformed: invalid JSON" in stderr
    lines = frames.count(b"\n")
    assert f"normalize: {2 * lines + 1} frames, {len(records)} trades," in stderr
    assert stderr.rstrip().endswith("1 malformed")
