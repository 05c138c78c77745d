"""A Kafka table whose insert fails redelivers that block, and every block fetched behind it, once the cause is
gone: nothing lost, nothing inserted twice, each message at its own offset.

The consumer builds the next full block while an insert runs and starts it before committing the one that
returned, so a failure has to rewind across the block that failed, the block built behind it and what was
fetched since. A CHECK constraint on the target table makes one block fail on every try until it is dropped.
"""

from __future__ import annotations

from tests.support import Stack, kafka_table_metric, kafka_test_table, wait_for

N = 600
BAD = 437  # the message the constraint refuses
BLOCK = 40  # kafka_max_block_size: many blocks, so one is always built behind a running insert


def _insert_errors(stack: Stack, name: str) -> float:
    return kafka_table_metric(stack, "k2_clickhouse_kafka_insert_errors_total", name)


def test_failed_insert_is_redelivered_with_everything_behind_it(stack: Stack) -> None:
    client = stack.client()
    with kafka_test_table(
        stack, "redeliver", sink="id UInt32, v String, offset UInt64, CONSTRAINT no_boom CHECK v != 'boom'",
        queue="id UInt32, v String", settings=f", kafka_handle_error_mode = 'stream', kafka_max_block_size = {BLOCK}",
    ) as name:  # fmt: skip
        # the whole topic is there before the view: the consumer starts on a backlog of full blocks
        stack.produce((f"k2test.{name}", {"id": i, "v": "boom" if i == BAD else "ok"}) for i in range(N))
        client.command(
            f"CREATE MATERIALIZED VIEW k2.{name}_mv TO k2.{name}_sink AS SELECT id, v, _offset AS offset "
            f"FROM k2.{name}_queue WHERE length(_error) = 0"
        )
        wait_for(lambda: _insert_errors(stack, name) >= 2, 60, "the refused block retried")
        landed = [r[0] for r in client.query(f"SELECT id FROM k2.{name}_sink ORDER BY id").result_rows]
        assert landed == list(range(len(landed))), "blocks land in order, none skipped"
        assert len(landed) <= BAD, "nothing from the refused block or behind it landed"

        client.command(f"ALTER TABLE k2.{name}_sink DROP CONSTRAINT no_boom")
        wait_for(lambda: client.command(f"SELECT count() FROM k2.{name}_sink") >= N, 60, "every message")
        rows = client.query(f"SELECT id, v, offset FROM k2.{name}_sink ORDER BY id, offset").result_rows
        assert rows == [(i, "boom" if i == BAD else "ok", i) for i in range(N)]
