"""Prometheus metrics of the worker, served on ``worker_metrics_port``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("interactions_in_total", "Messages read from the interactions topic")
EVENTS_COUNTED = Counter("interactions_counted_total", "Distinct accepted events counted")
EVENTS_DUPLICATE = Counter("interactions_duplicate_total", "Accepted events already counted")
EVENTS_REJECTED = Counter("interactions_rejected_total", "Messages sent to the dead-letter topic")
BATCHES = Counter("interaction_batches_total", "Batches committed to Postgres")
BATCH_SECONDS = Histogram(
    "interaction_batch_seconds",
    "Time to validate and commit a batch in Postgres",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_EVENTS = Histogram(
    "interaction_batch_events",
    "Messages per batch (batches adapt: small when traffic is light, full under backlog)",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000),
)
STORE_RETRIES = Counter("interaction_store_retries_total", "Retries after a store error", ["store"])
CONSUMER_LAG = Gauge(
    "interactions_consumer_lag", "Messages behind the partition end", ["partition"]
)
OUTBOX_PENDING = Gauge("interactions_redis_outbox_pending", "Committed batches not yet in Redis")
