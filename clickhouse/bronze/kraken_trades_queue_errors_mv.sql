-- Messages the queue could not parse, kept byte for byte with the parser's reason.
CREATE MATERIALIZED VIEW IF NOT EXISTS k2.kraken_trades_queue_errors_mv TO k2.ingest_errors AS
SELECT
    'kraken' AS exchange,
    _topic AS topic,
    toUInt32(_partition) AS partition,
    _offset AS offset,
    _raw_message AS raw_message,
    _error AS error
FROM k2.kraken_trades_queue
WHERE length(_error) > 0
