-- Moves parsed messages from the Kafka queue into bronze; broken ones go to ingest_errors instead.
CREATE MATERIALIZED VIEW IF NOT EXISTS k2.bronze_trades_binance_mv TO k2.bronze_trades_binance AS
SELECT
    exchange,
    symbol,
    canonical_symbol,
    trade_id,
    price,
    quantity,
    side,
    ts_event_ns,
    ts_received_ns,
    event_time_ns,
    is_buyer_maker,
    stream_type,
    first_trade_id,
    last_trade_id,
    _topic,
    toUInt32(_partition) AS _partition,
    _offset,
    _timestamp_ms AS _timestamp
FROM k2.binance_trades_queue
WHERE length(_error) = 0
