-- Moves parsed messages from the Kafka queue into bronze; broken ones go to ingest_errors instead.
CREATE MATERIALIZED VIEW IF NOT EXISTS k2.bronze_trades_kraken_mv TO k2.bronze_trades_kraken AS
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
    ord_type,
    is_snapshot,
    _topic,
    toUInt32(_partition) AS _partition,
    _offset,
    _timestamp_ms AS _timestamp
FROM k2.kraken_trades_queue
WHERE length(_error) = 0
