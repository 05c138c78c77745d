-- Raw landing zone for coinbase: the record as the feed handler published it, plus Kafka lineage.
-- Prices stay text here; silver parses and validates them. Redelivered messages may land twice:
-- bronze is an audit trail, silver is where trades are unique.
CREATE TABLE IF NOT EXISTS k2.bronze_trades_coinbase
(
    exchange LowCardinality(String),
    symbol LowCardinality(String),
    canonical_symbol LowCardinality(String),
    trade_id String,
    price String,   -- decimal text exactly as published
    quantity String,
    side LowCardinality(String),
    ts_event_ns Int64,
    ts_received_ns Int64,
    sequence_num UInt64,        -- envelope sequence_num, per connection
    maker_side LowCardinality(String), -- side as Coinbase sent it (the maker side)
    is_snapshot Bool,           -- true for trades from a subscribe snapshot
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    _timestamp Nullable(DateTime64(3, 'UTC')),   -- broker timestamp of the message
    ingested_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ingested_at)
ORDER BY (canonical_symbol, ts_event_ns, trade_id)
TTL toDateTime(ingested_at) + INTERVAL 7 DAY
SETTINGS ttl_only_drop_parts = 1
