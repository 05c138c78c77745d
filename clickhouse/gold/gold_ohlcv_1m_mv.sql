-- Silver -> 1m candles, the one gold level that reads trades. Silver only ever receives a trade once
-- (its dedup gate), so these sums count each trade once; invalid trades are left out. The coarser
-- intervals roll up these 1m partial states (gold_ohlcv_<interval>_mv), which is exact because every
-- state here merges associatively, and costs them a few rows per block instead of every trade.
CREATE MATERIALIZED VIEW IF NOT EXISTS k2.gold_ohlcv_1m_mv TO k2.gold_ohlcv_1m AS
SELECT
    exchange,
    canonical_symbol,
    toStartOfInterval(ts_event, INTERVAL 1 MINUTE) AS bucket,
    argMinState(price, (ts_event, trade_id_num)) AS open_state,
    max(price) AS high_state,
    min(price) AS low_state,
    argMaxState(price, (ts_event, trade_id_num)) AS close_state,
    sum(quantity) AS volume_state,
    sum(quote_volume) AS quote_volume_state,
    count() AS trade_count_state
FROM k2.silver_trades
WHERE is_valid
GROUP BY exchange, canonical_symbol, bucket
