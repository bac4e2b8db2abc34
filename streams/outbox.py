"""The Redis outbox: deltas committed to Postgres that Redis may not hold yet.

The write path inserts a batch's rows (streams/postgres_sink.py, in its one statement, so
they commit with the counts) in the shape defined here; this module reads them back, decodes
them and deletes them. A row is deleted only once Redis holds its batch; the
batch's marker in Redis (core/keys.applied_key) fences any replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from core.db import Connection
from core.mirror import new_epoch
from core.periods import Period


@dataclass(frozen=True, slots=True)
class HotBucket:
    """A bucket's deltas for Redis: ``counts[i]`` (COUNTERS order) of ``groups[i]``, and
    ``outcome_counts[j]`` events of custom type ``outcome_types[j]`` of ``outcome_groups[j]``."""

    tenant_id: str
    dimension: str
    period: Period
    start: date
    groups: list[str]
    counts: list[list[int]]
    outcome_groups: list[str] = field(default_factory=list)
    outcome_types: list[str] = field(default_factory=list)
    outcome_counts: list[int] = field(default_factory=list)


def hot_bucket(row: asyncpg.Record) -> HotBucket:
    return HotBucket(
        row["tenant_id"],
        row["dimension"],
        Period(row["period"]),
        row["bucket_start"],
        row["groups"],
        row["counts"],
        row["outcome_groups"] or [],
        row["outcome_types"] or [],
        row["outcome_counts"] or [],
    )


_SELECT_BATCHES = """
SELECT batch_id, tenant_id, dimension, period, bucket_start, groups, counts,
       outcome_groups, outcome_types, outcome_counts
FROM redis_outbox
WHERE batch_id IN (SELECT DISTINCT batch_id FROM redis_outbox ORDER BY batch_id LIMIT $1)
ORDER BY batch_id
"""
_SELECT_BATCH_IDS = "SELECT DISTINCT batch_id FROM redis_outbox"
# Deleted batches count as confirmed in Redis's epoch ($2, the one they were applied under):
# a Redis of that epoch counting fewer applied batches lost some (core/mirror.py).
_DELETE_BATCHES = """
WITH gone AS (DELETE FROM redis_outbox WHERE batch_id = ANY($1::int8[]) RETURNING batch_id)
UPDATE redis_mirror SET confirmed = confirmed + (SELECT count(DISTINCT batch_id) FROM gone)
WHERE epoch = $2
"""
_STILL_PENDING = "SELECT DISTINCT batch_id FROM redis_outbox WHERE batch_id = ANY($1::int8[])"
_DISCARD = """
WITH gone AS (DELETE FROM redis_outbox RETURNING batch_id)
SELECT count(DISTINCT batch_id) FROM gone
"""
_COUNT_BATCHES = "SELECT count(DISTINCT batch_id) FROM redis_outbox"


async def pending(pool: asyncpg.Pool, limit: int) -> list[tuple[int, list[HotBucket]]]:
    """Up to ``limit`` batches still in the outbox, oldest first, with their buckets."""
    batches: dict[int, list[HotBucket]] = {}
    for row in await pool.fetch(_SELECT_BATCHES, limit):
        batches.setdefault(row["batch_id"], []).append(hot_bucket(row))
    return list(batches.items())


async def pending_ids(conn: Connection) -> list[int]:
    """Every batch id in the outbox (read inside the resync's snapshot)."""
    return [row[0] for row in await conn.fetch(_SELECT_BATCH_IDS)]


async def forget(pool: asyncpg.Pool, batch_ids: Sequence[int], epoch: str) -> None:
    """Drop batches that Redis holds in ``epoch`` (their markers fence any replay)."""
    if batch_ids:
        await pool.execute(_DELETE_BATCHES, list(batch_ids), epoch)


async def still_pending(conn: Connection, batch_ids: Sequence[int]) -> list[int]:
    """Those of ``batch_ids`` still in the outbox."""
    return [row[0] for row in await conn.fetch(_STILL_PENDING, list(batch_ids))]


async def discard(pool: asyncpg.Pool) -> int:
    """Drop every batch (the outbox outgrew its bound while Redis was away) and start a new
    epoch in the same transaction: no Redis is trusted again before a resync copies the
    counts from Postgres. Returns how many batches were dropped."""
    async with pool.acquire() as conn, conn.transaction():
        await new_epoch(conn)
        return int(await conn.fetchval(_DISCARD))


async def backlog(pool: asyncpg.Pool) -> int:
    """How many batches wait for Redis."""
    return int(await pool.fetchval(_COUNT_BATCHES))
