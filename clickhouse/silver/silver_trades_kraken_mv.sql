-- Bronze kraken -> silver: parse decimals, validate, derive quote volume, and let each trade in once.
--
-- Dedup gate: a row is inserted only if (exchange, canonical_symbol, trade_id) is not in silver yet.
-- Inside a materialized view every reference to the source table (k2.bronze_trades_kraken) reads the
-- block being inserted, not the whole table, so the inner IN is the block's own keys and the silver
-- lookup is a primary-key probe. LIMIT 1 BY removes duplicates within the block. This is what keeps
-- redelivered messages from ever reaching the gold MVs (silver_trades stays a ReplacingMergeTree
-- as a second line: FINAL collapses anything that raced past the gate).
CREATE MATERIALIZED VIEW IF NOT EXISTS k2.silver_trades_kraken_mv TO k2.silver_trades AS
SELECT
    exchange, symbol, canonical_symbol, trade_id, trade_id_num,
    price_dec AS price,
    quantity_dec AS quantity,
    quote_volume, side, ts_event, ts_received, ts_ingested, is_valid, validation_errors, vendor,
    source_topic, source_partition, source_offset
FROM
(
    SELECT
        exchange,
        symbol,
        canonical_symbol,
        trade_id,
        toUInt64OrZero(trade_id) AS trade_id_num,
        ifNull(toDecimal128OrNull(price, 18), toDecimal128(0, 18)) AS price_dec,
        ifNull(toDecimal128OrNull(quantity, 18), toDecimal128(0, 18)) AS quantity_dec,
        -- exact product at scale 36, then brought to scale 18; a product that needs more digits is flagged below
        toDecimal256(price_dec, 18) * toDecimal256(quantity_dec, 18) AS quote_volume_exact,
        -- Decimal(38,18) holds 20 integer digits; a larger product is flagged, not allowed to stop ingestion
        abs(quote_volume_exact) < toDecimal256('100000000000000000000', 36) AS quote_volume_fits,
        if(quote_volume_fits, toDecimal128(quote_volume_exact, 18), toDecimal128(0, 18)) AS quote_volume,
        side,
        -- a trade without event time is invalid; stamping it with ingestion time keeps it visible
        -- (an epoch-0 timestamp would fall to the 30-day TTL the moment it is inserted)
        if(ts_event_ns > 0, fromUnixTimestamp64Nano(ts_event_ns, 'UTC'), now64(9, 'UTC')) AS ts_event,
        if(ts_received_ns > 0, fromUnixTimestamp64Nano(ts_received_ns, 'UTC'), now64(9, 'UTC')) AS ts_received,
        now64(6, 'UTC') AS ts_ingested,
        arrayFilter(e -> e != '', [
            if(exchange = 'kraken', '', if(exchange IN ('binance', 'kraken', 'coinbase'), 'exchange_mismatch', 'unknown_exchange')),
            if(empty(symbol), 'symbol_missing', ''),
            if(match(canonical_symbol, '^[A-Z0-9]+-[A-Z0-9]+$'), '', 'canonical_symbol_invalid'),
            if(empty(trade_id), 'trade_id_missing', ''),
            multiIf(NOT match(price, '^-?[0-9]{1,20}([.][0-9]{1,18})?$'), 'price_not_decimal',
                    price_dec <= 0, 'price_not_positive', ''),
            multiIf(NOT match(quantity, '^-?[0-9]{1,20}([.][0-9]{1,18})?$'), 'quantity_not_decimal',
                    quantity_dec <= 0, 'quantity_not_positive', ''),
            multiIf(NOT quote_volume_fits, 'quote_volume_overflow',
                toDecimal256(quote_volume, 36) != quote_volume_exact, 'quote_volume_inexact', ''),
            if(side IN ('buy', 'sell'), '', 'side_invalid'),
            if(ts_event_ns > 0, '', 'ts_event_missing')
        ]) AS validation_errors,
        empty(validation_errors) AS is_valid,
        map('ord_type', ord_type, 'is_snapshot', toString(is_snapshot)) AS vendor,
        _topic AS source_topic,
        _partition AS source_partition,
        _offset AS source_offset
    FROM k2.bronze_trades_kraken
    WHERE (exchange, canonical_symbol, trade_id) NOT IN (
        SELECT exchange, canonical_symbol, trade_id
        FROM k2.silver_trades
        WHERE (exchange, canonical_symbol, trade_id) IN (
            SELECT exchange, canonical_symbol, trade_id FROM k2.bronze_trades_kraken
        )
    )
    LIMIT 1 BY exchange, canonical_symbol, trade_id
)
