-- 1m partial states -> 30m. argMin/argMax states merge by their (ts_event, trade_id_num) keys and
-- the rest are sums/min/max, so rolling up 1m states gives exactly the candle computed from trades.
CREATE MATERIALIZED VIEW IF NOT EXISTS k2.gold_ohlcv_30m_mv TO k2.gold_ohlcv_30m AS
SELECT
    exchange,
    canonical_symbol,
    b AS bucket,
    argMinMergeState(open_state) AS open_state,
    max(high_state) AS high_state,
    min(low_state) AS low_state,
    argMaxMergeState(close_state) AS close_state,
    sum(volume_state) AS volume_state,
    sum(quote_volume_state) AS quote_volume_state,
    sum(trade_count_state) AS trade_count_state
FROM
(
    SELECT
        exchange, canonical_symbol, toStartOfInterval(bucket, INTERVAL 30 MINUTE) AS b,
        open_state, high_state, low_state, close_state, volume_state, quote_volume_state, trade_count_state
    FROM k2.gold_ohlcv_1m
)
GROUP BY exchange, canonical_symbol, b
