-- 5m OHLCV partial aggregates. Every column merges exactly under any merge order:
-- open/close are argMin/argMax keyed by (ts_event, trade_id_num), high/low are min/max,
-- volume, quote volume and count are sums of Decimal/UInt64. Read through k2.ohlcv_5m.
CREATE TABLE IF NOT EXISTS k2.gold_ohlcv_5m
(
    exchange LowCardinality(String),
    canonical_symbol LowCardinality(String),
    bucket DateTime('UTC'),
    open_state AggregateFunction(argMin, Decimal(38, 18), Tuple(DateTime64(9, 'UTC'), UInt64)),
    high_state SimpleAggregateFunction(max, Decimal(38, 18)),
    low_state SimpleAggregateFunction(min, Decimal(38, 18)),
    close_state AggregateFunction(argMax, Decimal(38, 18), Tuple(DateTime64(9, 'UTC'), UInt64)),
    volume_state SimpleAggregateFunction(sum, Decimal(38, 18)),
    quote_volume_state SimpleAggregateFunction(sum, Decimal(38, 18)),
    trade_count_state SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (exchange, canonical_symbol, bucket)
