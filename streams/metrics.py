"""Prometheus metrics of the worker, served on ``worker_metrics_port``.

The ones an operator alerts on are listed in the README ("Alerts"); their label values are
bounded (``reason_label``, ``retry_cause``), so no message can grow a metric's cardinality.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("interactions_in_total", "Messages read from the interactions topic")
EVENTS_COUNTED = Counter("interactions_counted_total", "Distinct accepted events counted")
EVENTS_DUPLICATE = Counter("interactions_duplicate_total", "Accepted events already counted")
EVENTS_REJECTED = Counter("interactions_rejected_total", "Messages sent to the dead-letter topic")
DEAD_LETTERS = Counter(
    "interactions_dead_letters_total",
    "Messages sent to the dead-letter topic, by reason (reason_label)",
    ["reason"],
)
BATCHES = Counter("interaction_batches_total", "Batches committed to Postgres")
LAST_COMMIT = Gauge(
    "interactions_last_commit_timestamp_seconds",
    "Unix time the last batch was done: counted in Postgres or dead-lettered (safe to ack)",
)
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
STORE_RETRIES = Counter(
    "interaction_store_retries_total",
    "Retries after a store error, by store and cause (SQLSTATE or exception class)",
    ["store", "cause"],
)
CONSUMER_LAG = Gauge(
    "interactions_consumer_lag", "Messages behind the partition end", ["partition"]
)
LOG_REWOUND = Counter(
    "interactions_partition_rewinds_total",
    "Partitions read again from the start: their log ended below the committed position",
    ["partition"],
)
OUTBOX_PENDING = Gauge("interactions_redis_outbox_pending", "Committed batches not yet in Redis")
OUTBOX_DISCARDED = Counter(
    "interactions_redis_outbox_discarded_total",
    "Outbox batches dropped past redis_outbox_max_batches (Redis is resynced instead)",
)
REDIS_EPOCH = Gauge(
    "interactions_redis_epoch", "Resync counter of the epoch Postgres vouches for (core/mirror)"
)
REDIS_RESYNCS = Counter(
    "interactions_redis_resyncs_total",
    "Resyncs started, by why Redis was not provably current",
    ["reason"],
)
RECONCILE_CHECKS = Counter(
    "interactions_redis_reconcile_checks_total",
    "Sampled groups compared between Redis and Postgres",
)
RECONCILE_MISMATCHES = Counter(
    "interactions_redis_reconcile_mismatches_total",
    "Sampled groups whose Redis counters differ from Postgres (each triggers a resync)",
)

RETENTION_RUNS = Counter(
    "interactions_retention_runs_total", "Retention runs done (streams/retention.py)"
)
RETENTION_EVENTS_FROM = Gauge(
    "interactions_retention_events_from_timestamp_seconds",
    "Unix time before which events are not counted (retention); 0: everything is kept",
)

_FIELD = re.compile(r"^field '(\w{1,32})'")
_SQLSTATE = re.compile(r"^postgres refused the event \(([0-9A-Z]{5})\)")
_PREFIXES = (
    ("empty message", "empty"),
    ("not JSON", "not_json"),
    ("not a JSON object", "not_object"),
    ("older than the retention", "beyond_retention"),
)


def reason_label(reason: str) -> str:
    """A dead letter's reason as a bounded label: ``not_json``, ``field_timestamp``,
    ``postgres_23514``, ... (the full reason is in the dead letter's headers)."""
    found = _SQLSTATE.match(reason)
    if found:
        return f"postgres_{found.group(1)}"
    found = _FIELD.match(reason)
    if found:
        return f"field_{found.group(1)}"
    for prefix, label in _PREFIXES:
        if reason.startswith(prefix):
            return label
    return "other"


def retry_cause(exc: BaseException) -> str:
    """A retry's cause as a bounded label: the SQLSTATE of a database error, else the
    exception's class name."""
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and re.fullmatch(r"[0-9A-Z]{5}", state):
        return state
    return type(exc).__name__
