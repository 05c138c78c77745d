"""The embedded ClickHouse speaks ClickHouse HTTP: clickhouse-connect and plain HTTP clients work."""

from __future__ import annotations

import gzip
import http.client
import urllib.parse
from datetime import UTC, datetime
from decimal import Decimal

import lz4.frame
import pyarrow as pa
import pytest
from backports import zstd
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.support import Stack

TYPES = """
CREATE TABLE IF NOT EXISTS roundtrip.types
(
    id UInt32,
    lc LowCardinality(String),
    e Enum8('buy' = 1, 'sell' = 2),
    d Decimal(38, 18),
    ts DateTime64(9, 'UTC'),
    arr Array(String),
    m Map(String, String),
    b Bool,
    n Nullable(Int64)
)
ENGINE = MergeTree ORDER BY id
"""
ROW = (
    1,
    "BTC-USD",
    "sell",
    Decimal("12345678901234567890.123456789012345678"),
    datetime(2026, 11, 22, 21, 5, 42, 514318, tzinfo=UTC),
    ["a", "b"],
    {"k": "v"},
    True,
    None,
)


def _http(
    stack: Stack, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = stack.clickhouse_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_clickhouse_connect_round_trips_every_type(stack: Stack) -> None:
    client = stack.client()
    client.command("CREATE DATABASE IF NOT EXISTS roundtrip")
    client.command("DROP TABLE IF EXISTS roundtrip.types")
    client.command(TYPES)
    client.insert("roundtrip.types", [list(ROW)], column_names=["id", "lc", "e", "d", "ts", "arr", "m", "b", "n"])
    arrow = pa.table(
        {
            "id": pa.array([2], pa.uint32()),
            "lc": ["ETH-USD"],
            "e": ["buy"],
            "d": pa.array([Decimal("0.000000000000000001")], pa.decimal128(38, 18)),
            "ts": pa.array([1_795_385_142_514_318_123], pa.timestamp("ns", tz="UTC")),
            "arr": pa.array([[]], pa.list_(pa.string())),
            "m": pa.array([[]], pa.map_(pa.string(), pa.string())),
            "b": [False],
            "n": pa.array([-5], pa.int64()),
        }
    )
    client.insert_arrow("roundtrip.types", arrow)

    rows = client.query("SELECT * FROM roundtrip.types ORDER BY id").result_rows
    first = list(rows[0])
    first[4] = first[4].replace(tzinfo=UTC) if first[4].tzinfo is None else first[4]
    assert tuple(first) == ROW
    assert rows[1][1:4] == ("ETH-USD", "buy", Decimal("0.000000000000000001"))
    assert rows[1][5:] == ([], {}, False, -5)

    back = client.query_arrow("SELECT id, d, ts FROM roundtrip.types ORDER BY id")
    assert back.column("d").to_pylist() == [ROW[3], Decimal("0.000000000000000001")]
    assert back.column("ts").cast(pa.int64()).to_pylist()[1] == 1_795_385_142_514_318_123
    params = client.query("SELECT {s:String}, {n:UInt32}", parameters={"s": "it's", "n": 7}).result_rows
    assert params == [("it's", 7)]
    assert client.command("SELECT count() FROM roundtrip.types", settings={"max_threads": 1}) == 2


def test_errors_carry_the_clickhouse_code(stack: Stack) -> None:
    with pytest.raises(DatabaseError, match="code: 60"):
        stack.client().query("SELECT * FROM roundtrip.no_such_table")
    status, headers, body = _http(stack, "GET", "/?query=" + urllib.parse.quote("SELEC 1"))
    assert status == 400
    assert headers["X-ClickHouse-Exception-Code"] == "62"
    assert body.startswith(b"Code: 62. DB::Exception: Syntax error")


def test_plain_http_ping_query_and_format(stack: Stack) -> None:
    assert _http(stack, "GET", "/ping")[2] == b"Ok.\n"
    query = urllib.parse.quote("SELECT 1 AS x, 'a' AS y FORMAT JSONEachRow")
    status, headers, body = _http(stack, "GET", f"/?query={query}")
    assert (status, headers["X-ClickHouse-Format"], body) == (200, "JSONEachRow", b'{"x":1,"y":"a"}\n')
    assert _http(stack, "POST", "/", b"SELECT 40 + 2")[2] == b"42\n"
    assert _http(stack, "GET", "/?query=SELECT+{v:UInt8}&param_v=9")[2] == b"9\n"


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("lz4", lz4.frame.compress), ("zstd", zstd.compress), ("", lambda b: b)],
)
def test_insert_bodies_plain_and_compressed(stack: Stack, encoding: str, compress: object) -> None:
    client = stack.client()
    client.command("CREATE DATABASE IF NOT EXISTS roundtrip")
    table = f"roundtrip.bodies_{encoding or 'plain'}"
    client.command(f"CREATE TABLE IF NOT EXISTS {table} (id UInt32, s String) ENGINE = MergeTree ORDER BY id")
    client.command(f"TRUNCATE TABLE {table}")
    data = b'{"id": 1, "s": "x"}\n{"id": 2, "s": "y"}\n'
    query = urllib.parse.quote(f"INSERT INTO {table} FORMAT JSONEachRow")
    headers = {"Content-Encoding": encoding} if encoding else {}
    status, _, body = _http(stack, "POST", f"/?query={query}", compress(data), headers)  # type: ignore[operator]
    assert status == 200, body
    assert client.query(f"SELECT id, s FROM {table} ORDER BY id").result_rows == [(1, "x"), (2, "y")]


def test_chunked_insert_body(stack: Stack) -> None:
    client = stack.client()
    client.command("CREATE DATABASE IF NOT EXISTS roundtrip")
    client.command("CREATE TABLE IF NOT EXISTS roundtrip.chunked (id UInt32) ENGINE = MergeTree ORDER BY id")
    host, port = stack.clickhouse_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    query = urllib.parse.quote("INSERT INTO roundtrip.chunked FORMAT CSV")
    try:
        conn.request("POST", f"/?query={query}", body=iter([b"1\n2\n", b"3\n"]), encode_chunked=True)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert client.query("SELECT sum(id) FROM roundtrip.chunked").result_rows == [(6,)]
