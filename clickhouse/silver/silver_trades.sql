-- Unified, validated trades from every exchange; each trade once (see silver_trades_<exchange>_mv).
-- Invalid rows are kept with is_valid = false and the reasons in validation_errors; gold ignores them.
-- Decimal(38,18): 20 integer digits for any price, 18 fractional digits for sub-satoshi sizes.
CREATE TABLE IF NOT EXISTS k2.silver_trades
(
    exchange LowCardinality(String),
    symbol LowCardinality(String),             -- as the venue spells it
    canonical_symbol LowCardinality(String),   -- BASE-QUOTE
    trade_id String,
    trade_id_num UInt64,                       -- numeric trade id, the tie-break for open/close
    price Decimal(38, 18),
    quantity Decimal(38, 18),
    quote_volume Decimal(38, 18),              -- exactly price * quantity
    side LowCardinality(String),               -- taker side: buy or sell
    ts_event DateTime64(9, 'UTC'),
    ts_received DateTime64(9, 'UTC'),
    ts_ingested DateTime64(6, 'UTC'),
    is_valid Bool,
    validation_errors Array(String),
    vendor Map(String, String),
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(ts_event)
ORDER BY (exchange, canonical_symbol, trade_id)
TTL toDateTime(ts_event) + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1
