#!/bin/bash
# redpanda-init (one-shot): the exchange topics with production partition counts and retention, and
# consumer-lag metrics for Prometheus. Idempotent: existing topics get their retention reset and are
# grown to the partition count, never shrunk.
set -euo pipefail
rpk() { command rpk -X brokers="${REDPANDA_BROKERS}" "$@"; }

ensure() {  # topic partitions retention_ms
  if rpk topic describe "$1" >/dev/null 2>&1; then
    have=$(rpk topic describe "$1" -p | tail -n +2 | grep -c . || true)
    if (( have < $2 )); then rpk topic add-partitions "$1" --num $(( $2 - have )); fi
    rpk topic alter-config "$1" --set retention.ms="$3"
  else
    rpk topic create "$1" --partitions "$2" --replicas "${REDPANDA_REPLICAS}" \
      --topic-config retention.ms="$3" --topic-config cleanup.policy=delete
  fi
}

for spec in binance:40 kraken:20 coinbase:20; do
  exchange=${spec%%:*} partitions=${spec##*:}
  ensure "market.crypto.trades.${exchange}" "$partitions" "${TRADES_RETENTION_MS}"
  ensure "market.crypto.trades.${exchange}.raw" "$partitions" "${RAW_RETENTION_MS}"
  ensure "market.crypto.trades.${exchange}.dlq" 1 "${DLQ_RETENTION_MS}"
done

# redpanda_kafka_consumer_group_lag_* for the k2-clickhouse-* groups (docker/prometheus/rules/k2-recording.yml)
rpk cluster config set enable_consumer_group_metrics '["group", "partition", "consumer_lag"]'
rpk topic list
