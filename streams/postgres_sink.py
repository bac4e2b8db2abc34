"""Writes one batch to Postgres in one transaction: history, distinct pairs, counters, outbox.

Exactly-once lives here: the history table's primary key on (tenant, event id) decides which
events are new, and only those are counted, in the same transaction as the counters. A batch
replayed after a crash finds its events already present and adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from core.keys import COUNTERS
from streams.counters import (
    Deltas,
    DistinctPair,
    add_distinct,
    batch_deltas,
    distinct_pairs,
    encode_deltas,
    unique_by_id,
)
from streams.events import Interaction

# Rows go in sorted by key so concurrent workers lock rows in the same order (no deadlocks).
INSERT_HISTORY = """
INSERT INTO interaction_history
    (tenant_id, event_id, ts, customer_id, action_id, treatment_id, channel_id, type)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[])
ON CONFLICT (tenant_id, event_id) DO NOTHING
RETURNING tenant_id, event_id
"""

INSERT_DISTINCT = """
INSERT INTO bucket_distinct (tenant_id, dimension, period, bucket_start, group_id, item_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[], $6::text[])
ON CONFLICT DO NOTHING
RETURNING tenant_id, dimension, period, bucket_start, group_id, item_id
"""

UPSERT_BUCKETS = """
INSERT INTO interaction_bucket
    (tenant_id, dimension, period, bucket_start, group_id,
     impression, click, dismiss, accept, convert, total, distinct_count)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[],
                     $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],
                     $12::int8[])
ON CONFLICT (tenant_id, dimension, period, bucket_start, group_id) DO UPDATE SET
    impression     = interaction_bucket.impression + excluded.impression,
    click          = interaction_bucket.click + excluded.click,
    dismiss        = interaction_bucket.dismiss + excluded.dismiss,
    accept         = interaction_bucket.accept + excluded.accept,
    convert        = interaction_bucket.convert + excluded.convert,
    total          = interaction_bucket.total + excluded.total,
    distinct_count = interaction_bucket.distinct_count + excluded.distinct_count
"""

INSERT_OUTBOX = "INSERT INTO redis_outbox (deltas) VALUES ($1) RETURNING id"


@dataclass(frozen=True, slots=True)
class WrittenBatch:
    """What one committed batch changed: ``outbox_id`` is None when nothing was new."""

    outbox_id: int | None
    payload: bytes
    new_events: int
    duplicates: int


async def write_batch(pool: asyncpg.Pool, events: Sequence[Interaction]) -> WrittenBatch:
    """Commit the batch's new events and their counter deltas atomically."""
    unique = sorted(unique_by_id(events), key=lambda e: (e.tenant_id, e.id))
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetch(INSERT_HISTORY, *_history_columns(unique))
        new_ids = {(row[0], row[1]) for row in inserted}
        new_events = [e for e in unique if (e.tenant_id, e.id) in new_ids]
        if not new_events:
            return WrittenBatch(None, b"", 0, len(events))
        deltas = batch_deltas(new_events)
        pairs = sorted(distinct_pairs(new_events))
        new_pairs = await conn.fetch(INSERT_DISTINCT, *_columns(pairs, 6))
        add_distinct(deltas, (DistinctPair(*row) for row in new_pairs))
        await conn.execute(UPSERT_BUCKETS, *_bucket_columns(deltas))
        payload = encode_deltas(deltas)
        outbox_id = await conn.fetchval(INSERT_OUTBOX, payload)
    return WrittenBatch(outbox_id, payload, len(new_events), len(events) - len(new_events))


def _history_columns(events: Sequence[Interaction]) -> list[list[object]]:
    return [
        [e.tenant_id for e in events],
        [e.id for e in events],
        [e.timestamp for e in events],
        [e.customer_id for e in events],
        [e.action_id for e in events],
        [e.treatment_id for e in events],
        [e.channel_id for e in events],
        [e.type for e in events],
    ]


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    return [[row[i] for row in rows] for i in range(width)]


def _bucket_columns(deltas: Deltas) -> list[list[object]]:
    rows = [(*key, *counts) for key, counts in sorted(deltas.items())]
    return _columns(rows, 5 + len(COUNTERS))
