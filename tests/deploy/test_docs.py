"""Docs point at things that exist: every relative link in README.md and docs/ resolves, anchors too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.test_prometheus import _anchors
from tests.support import REPO, Stack


def test_relative_links_and_anchors_resolve() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.relative_to(REPO)}: {target}"
            if anchor and resolved.suffix == ".md":
                assert anchor in _anchors(resolved.read_text()), f"{page.relative_to(REPO)}: {target}"
            checked += 1
    assert checked > 30


def test_runbooks_cover_the_issue_topics() -> None:
    anchors = _anchors((REPO / "docs" / "runbooks.md").read_text())
    assert {"adding-a-symbol", "adding-an-exchange", "recreating-or-reloading-a-handler",
            "triggering-or-re-running-an-offload-from-the-prefect-ui", "querying-with-clickhouse-client",
            "redpanda-partitions-and-brokers", "clickhouse-replicas-with-keeper",
            "spark-for-offload-and-compaction"} <= anchors  # fmt: skip
    assert len(list(Path(REPO / "docs" / "adr").glob("000*.md"))) == 4


# Runbook queries that need what the embedded test stack lacks, with the reason the runbook gives.
_NOT_EMBEDDED = {
    "system.kafka_consumers": "Production only (clickhouse-server's Kafka engine)",
    "k2.silver_trades_all": "the view from [offload.md]",
}


@pytest.mark.integration
def test_runbook_sql_examples_run_against_the_k2_tables(stack: Stack) -> None:
    runbook = (REPO / "docs" / "runbooks.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", runbook, re.S)
    statements = [s.strip() for block in blocks for s in block.split(";") if s.strip()]
    client = stack.client()
    ran = 0
    for sql in statements:
        skipped = [table for table in _NOT_EMBEDDED if table in sql]
        if skipped:
            assert _NOT_EMBEDDED[skipped[0]] in runbook
            continue
        client.query(sql)  # raises on an unknown table, column or function
        ran += 1
    assert ran >= 6
