"""A ClickHouse-compatible HTTP endpoint over :class:`~k2.embedded.chdb_engine.ChdbEngine`.

Speaks what clickhouse-client tooling over HTTP, clickhouse-connect and ``curl`` use: ``/ping``,
queries in the ``query`` parameter and/or the body, ``INSERT ... FORMAT X`` with the data as body
(plain, chunked, gzip/deflate/lz4/zstd), ``param_<name>`` bound parameters, ``database``,
``default_format``, settings as URL parameters, and errors as non-200 answers carrying
``X-ClickHouse-Exception-Code``. ``/metrics`` serves Prometheus metrics of the embedded server.
"""

from __future__ import annotations

import base64
import gzip
import logging
import os
import re
import tempfile
import threading
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import lz4.frame
import orjson
from backports import zstd  # type: ignore[import-not-found, unused-ignore]
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from k2.embedded.chdb_engine import ChdbEngine
from k2.embedded.kafka_ddl import strip_comments
from k2.errors import ClickHouseError

__all__ = ["ClickHouseHTTPServer"]

log = logging.getLogger(__name__)

QUERIES = Counter("k2_clickhouse_http_queries_total", "Queries served by the embedded endpoint", ["status"])

# URL parameters that steer the HTTP layer or the client, not query execution.
_HTTP_PARAMS = frozenset(
    {
        "query", "database", "default_format", "session_id", "session_timeout", "session_check",
        "query_id", "compress", "decompress", "enable_http_compression", "wait_end_of_query",
        "send_progress_in_http_headers", "http_headers_progress_interval_ms", "user", "password",
        "quota_key", "buffer_size", "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close",
        "client_protocol_version", "http_write_exception_in_output_format", "role",
    }
)  # fmt: skip
# INSERT ... FORMAT <name> followed by the data (ClickHouse appends the body to the query parameter).
_INSERT_FORMAT = re.compile(rb"^\s*(?P<head>INSERT\s+INTO\s+[^;]+?)\s+FORMAT\s+(?P<fmt>\w+)[ \t]*(\r?\n)?", re.I | re.S)
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(?P<fmt>\w+)\s*;?\s*$", re.I)
_QUERY_STRING = re.compile(r"\?\S*")
_CONTENT_TYPES = {
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}
_STATUS_BY_CODE = {60: 404, 81: 404, 62: 400, 47: 400, 115: 400, 516: 401}


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "lz4":
        return bytes(lz4.frame.decompress(body))
    if encoding == "zstd":
        return bytes(zstd.decompress(body))  # type: ignore[no-untyped-call, unused-ignore]
    raise ClickHouseError(f"Unknown Content-Encoding: {encoding}", 1)


class ClickHouseHTTPServer:
    """Serves one engine on ``host:port`` from a pool of threads; ``start()``/``stop()``."""

    def __init__(self, engine: ChdbEngine, host: str, port: int, tmp_dir: Path, password: str = "") -> None:
        self._engine = engine
        self._tmp_dir = tmp_dir
        self._password = password
        tmp_dir.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"server_ctx": self})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="clickhouse-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    # -- request handling (called from handler threads) -------------------------------------------

    def authorised(self, headers: Any, params: dict[str, str]) -> bool:
        if not self._password:
            return True
        given = headers.get("X-ClickHouse-Key") or params.get("password", "")
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic "):
            given = base64.b64decode(auth[6:]).decode().partition(":")[2]
        return bool(given == self._password)

    def run_query(self, params: dict[str, str], body: bytes) -> tuple[bytes, str]:
        query = params.get("query", "")
        database = params.get("database") or None
        bound = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {k: v for k, v in params.items() if k not in _HTTP_PARAMS and not k.startswith("param_")}
        full = (query.encode() + b"\n" + body) if query and body else (query.encode() or body)
        insert = _INSERT_FORMAT.match(full)
        if insert is not None and len(full) > insert.end():
            head, fmt, data = (
                insert.group("head").decode(),
                insert.group("fmt").decode(),
                full[insert.end() :],
            )
            return self._insert_body(head, fmt, data, database, settings), ""
        try:
            sql = full.decode()
        except UnicodeDecodeError as exc:
            raise ClickHouseError(f"Query is not valid UTF-8: {exc}", 27) from exc
        clause = _FORMAT_CLAUSE.search(strip_comments(sql))
        fmt = clause.group("fmt") if clause else params.get("default_format", "TabSeparated")
        return self._with_settings(settings, lambda: self._engine.execute(sql, fmt, bound, database).data), fmt

    def _insert_body(self, head: str, fmt: str, body: bytes, database: str | None, settings: dict[str, str]) -> bytes:
        fd, name = tempfile.mkstemp(dir=self._tmp_dir, suffix="." + fmt)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            sql = f"{head} FROM INFILE '{name}' FORMAT {fmt}"
            return self._with_settings(settings, lambda: self._engine.execute(sql, "TabSeparated", None, database).data)
        finally:
            os.unlink(name)

    def _with_settings(self, settings: dict[str, str], run: Any) -> bytes:
        if not settings:
            return bytes(run())
        with self._engine.session_settings(settings):
            return bytes(run())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_ctx: ClickHouseHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        # the query string carries SQL, bound values (an S3 key in cold DDL) and maybe a password: drop it
        log.debug("%s %s", self.address_string(), _QUERY_STRING.sub("?...", format % args))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/ping", "/health"):
            self._send(200, b"Ok.\n", "text/plain; charset=UTF-8")
        elif path == "/metrics":
            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path == "/":
            self._handle(b"")
        else:
            self._send(404, b"There is no handle " + path.encode() + b"\n", "text/plain; charset=UTF-8")

    def do_HEAD(self) -> None:
        self._send(200, b"", "text/plain; charset=UTF-8")

    def do_POST(self) -> None:
        try:
            body = _decode_body(self._read_body(), self.headers.get("Content-Encoding", ""))
        except (ClickHouseError, OSError, ValueError, RuntimeError) as exc:
            self._error(ClickHouseError(f"Cannot read request body: {exc}", 1))
            return
        self._handle(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, body: bytes) -> None:
        params = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
        if not self.server_ctx.authorised(self.headers, params):
            self._error(ClickHouseError("Authentication failed: password is incorrect", 516))
            return
        try:
            data, fmt = self.server_ctx.run_query(params, body)
        except ClickHouseError as exc:
            self._error(exc)
            return
        except Exception as exc:  # an endpoint bug must still answer, not drop the connection
            log.exception("embedded ClickHouse endpoint failed on a request")
            self._error(ClickHouseError(f"{type(exc).__name__}: {exc}", 1001))
            return
        QUERIES.labels("ok").inc()
        headers = {"X-ClickHouse-Format": fmt} if fmt else {}
        self._send(200, data, _CONTENT_TYPES.get(fmt, "text/plain; charset=UTF-8"), headers)

    def _error(self, exc: ClickHouseError) -> None:
        QUERIES.labels("error").inc()
        message = str(exc)
        if not message.startswith("Code:"):
            message = f"Code: {exc.code}. DB::Exception: {message}"
        status = _STATUS_BY_CODE.get(exc.code, 500)
        self._send(
            status,
            message.encode() + b"\n",
            "text/plain; charset=UTF-8",
            {"X-ClickHouse-Exception-Code": str(exc.code)},
        )

    def _send(self, status: int, data: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-ClickHouse-Server-Display-Name", "k2-embedded")
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("X-ClickHouse-Query-Id", str(uuid.uuid4()))
        summary = {"read_rows": "0", "written_rows": "0", "result_rows": "0"}
        self.send_header("X-ClickHouse-Summary", orjson.dumps(summary).decode())
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
