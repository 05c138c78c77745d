-- Messages a queue table could not parse, from every exchange. Nothing is dropped silently:
-- the raw bytes and ClickHouse's reason are kept for 30 days for replay or repair.
CREATE TABLE IF NOT EXISTS k2.ingest_errors
(
    exchange LowCardinality(String),
    topic LowCardinality(String),
    partition UInt32,
    offset UInt64,
    raw_message String,
    error String,
    ingested_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ingested_at)
ORDER BY (exchange, topic, partition, offset)
TTL toDateTime(ingested_at) + INTERVAL 30 DAY
