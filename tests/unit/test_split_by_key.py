"""split_by_key: the parts of a block that the embedded Kafka engine inserts at once share no key."""

from __future__ import annotations

import pyarrow as pa
from aiokafka.structs import TopicPartition

from k2.embedded.kafka_engine import build_block, split_by_key
from k2.embedded.kafka_fetch import Fetched

TP = TopicPartition("market.crypto.trades.binance", 0)


def _block(keys: list[bytes]) -> pa.Table:
    n = len(keys)
    return build_block(Fetched(values=[b"{}"] * n, keys=list(keys), offsets=list(range(n)), timestamps=[0] * n,
                               runs=[(TP, n)]))  # fmt: skip


def _offsets(part: pa.Table) -> list[int]:
    return [int(o) for o in part.column("offset").to_pylist()]


def test_whole_keys_go_to_the_lightest_lane_largest_first_and_rows_keep_their_order() -> None:
    keys = [b"a", b"b", b"a", b"c", b"d", b"a", b"b", b"c", b"a", b"d", b"b", b"a"]  # a 5, b 3, c 2, d 2
    parts = split_by_key(_block(keys), 2)
    # a (5) -> lane 0; b (3) -> lane 1; c (2) -> lane 1 (3 < 5); d (2) -> lane 0 (5 <= 5): 7 and 5 rows
    assert [_offsets(p) for p in parts] == [[0, 2, 4, 5, 8, 9, 11], [1, 3, 6, 7, 10]]
    assert [sorted(set(p.column("key").to_pylist())) for p in parts] == [[b"a", b"d"], [b"b", b"c"]]


def test_a_block_with_one_key_or_one_lane_stays_whole() -> None:
    one_key = _block([b"BTCUSDT"] * 5)
    assert split_by_key(one_key, 2) == [one_key]
    many = _block([b"a", b"b", b"c"])
    assert split_by_key(many, 1) == [many]


def test_no_more_parts_than_keys_and_keyless_messages_stay_together() -> None:
    parts = split_by_key(_block([b"", b"x", b"", b"x", b""]), 4)
    assert [_offsets(p) for p in parts] == [[0, 2, 4], [1, 3]]
