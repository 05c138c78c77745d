-- Kafka consumer for market.crypto.trades.binance: one trade record (JSON) per message.
-- 'stream' error mode: a message that does not parse becomes a row with _error/_raw_message set
-- instead of stopping the consumer; binance_trades_queue_errors_mv routes it to k2.ingest_errors.
-- ${KAFKA_BROKER_LIST} is filled in by `k2 db migrate` from K2_CLICKHOUSE_KAFKA_BROKERS.
CREATE TABLE IF NOT EXISTS k2.binance_trades_queue
(
    exchange String,
    symbol String,
    canonical_symbol String,
    trade_id String,
    price String,
    quantity String,
    side String,
    ts_event_ns Int64,
    ts_received_ns Int64,
    event_time_ns Int64,
    is_buyer_maker Bool,
    stream_type String,
    first_trade_id Nullable(Int64),
    last_trade_id Nullable(Int64)
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '${KAFKA_BROKER_LIST}',
    kafka_topic_list = 'market.crypto.trades.binance',
    kafka_group_name = 'k2-clickhouse-binance',
    kafka_format = 'JSONEachRow',
    kafka_handle_error_mode = 'stream',
    kafka_num_consumers = 1,
    kafka_max_block_size = 262144,
    kafka_flush_interval_ms = 250
