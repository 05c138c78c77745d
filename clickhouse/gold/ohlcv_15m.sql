-- Final 15m candles, what users query. Merging the partial states at read time makes every candle
-- exact whether or not background merges have run. vwap is the one rounded column (18 decimals).
CREATE VIEW IF NOT EXISTS k2.ohlcv_15m AS
SELECT
    exchange,
    canonical_symbol,
    bucket,
    argMinMerge(open_state) AS open,
    max(high_state) AS high,
    min(low_state) AS low,
    argMaxMerge(close_state) AS close,
    sum(volume_state) AS volume,
    sum(quote_volume_state) AS quote_volume,
    sum(trade_count_state) AS trade_count,
    toDecimal128(toDecimal256(quote_volume, 36) / volume, 18) AS vwap,
    bucket + INTERVAL 15 MINUTE <= now() AS is_closed
FROM k2.gold_ohlcv_15m
GROUP BY exchange, canonical_symbol, bucket
