"""Erasure of one customer (DELETE /api/v1/customers/{id}): their history goes, their
contributions leave every bucket of every dimension in Postgres and Redis, in one step.

- One Postgres transaction under the counting lock taken exclusive (batches take it shared,
  streams/postgres_sink.py): no batch is half-counted while the erasure reads, and none sees
  it half-done.
- The customer's history rows are deleted; their event ids stay in ``erased_event`` (ids
  only, no personal data) and the write statement skips them, so an old event published
  again is a duplicate, as any event seen before.
- The deltas are the erased events' own counts (pure: ``erasure_deltas``, and
  ``erasure_outcomes`` for the custom outcome types), subtracted from
  the stored buckets (a bucket's shards are folded into one row; a bucket left with no
  interaction is deleted). Distinct items: the customer's own (customer -> actions) pairs
  go; a (channel, treatment) pair keeps a bucket only if another event of the tenant still
  has that pair in it, which Postgres answers from the remaining history.
- Redis gets the same deltas, negated, through the outbox in the same transaction: the
  exactly-once apply path (marker per batch) carries them, applied at once when Redis is
  ready and by the worker's catch-up loop otherwise.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import asyncpg

from core.db import Connection
from core.distinct import tag
from core.hot import oldest_kept_starts
from core.mirror import mirror_state
from core.periods import STORED_PERIODS, Period, bucket_starts, next_bucket_start
from core.schema import COUNTER_COLUMNS, COUNTERS, SYSTEM_TYPES
from streams import outbox
from streams.outbox import HotBucket
from streams.postgres_sink import COUNTING_LOCK_ID
from streams.redis_sink import NOT_READY, RedisSink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ErasedEvent:
    """An erased history row: what its counts were made of."""

    event_id: str
    ts: datetime
    action_id: str
    treatment_id: str | None
    channel_id: str | None
    type: str


# (dimension, group, period, bucket start)
BucketKey = tuple[str, str, Period, date]
# (channel, treatment)
Pair = tuple[str, str]


def erasure_deltas(customer: str, events: Iterable[ErasedEvent]) -> dict[BucketKey, list[int]]:
    """What ``events`` (all of ``customer``'s events) added to every bucket, in COUNTERS order.

    ``distinct`` is filled for the customer's own buckets (their distinct actions: all of them
    go); a channel's distinct treatments depend on other customers (``channel_distinct``).
    """
    deltas: dict[BucketKey, list[int]] = defaultdict(lambda: [0] * len(COUNTERS))
    actions: dict[tuple[Period, date], set[str]] = defaultdict(set)
    total = COUNTERS.index("total")
    for e in events:
        groups = _groups(customer, e)
        for period, start in bucket_starts(e.ts):
            actions[(period, start)].add(e.action_id)
            for dimension, group in groups:
                row = deltas[(dimension, group, period, start)]
                row[total] += 1
                if e.type in SYSTEM_TYPES:
                    row[COUNTERS.index(e.type)] += 1
    distinct = COUNTERS.index("distinct")
    for (period, start), seen in actions.items():
        deltas[("customer", customer, period, start)][distinct] = len(seen)
    return dict(deltas)


def erasure_outcomes(
    customer: str, events: Iterable[ErasedEvent]
) -> dict[tuple[BucketKey, str], int]:
    """What ``events`` added to each bucket's count of a custom outcome type (the system
    types are columns of ``erasure_deltas``)."""
    counts: dict[tuple[BucketKey, str], int] = defaultdict(int)
    for e in events:
        if e.type in SYSTEM_TYPES:
            continue
        for period, start in bucket_starts(e.ts):
            for dimension, group in _groups(customer, e):
                counts[((dimension, group, period, start), e.type)] += 1
    return dict(counts)


def _groups(customer: str, e: ErasedEvent) -> list[tuple[str, str]]:
    groups = [("action", e.action_id), ("customer", customer)]
    if e.treatment_id is not None:
        groups.append(("treatment", e.treatment_id))
    if e.channel_id is not None:
        groups.append(("channel", e.channel_id))
    return groups


def pair_buckets(events: Iterable[ErasedEvent]) -> dict[Pair, set[tuple[Period, date]]]:
    """The buckets (all four periods) in which each erased event's (channel, treatment) was seen."""
    found: dict[Pair, set[tuple[Period, date]]] = defaultdict(set)
    for e in events:
        if e.channel_id is not None and e.treatment_id is not None:
            found[(e.channel_id, e.treatment_id)].update(bucket_starts(e.ts))
    return dict(found)


def channel_distinct(
    gone: Iterable[tuple[Pair, Period, date]],
) -> dict[BucketKey, int]:
    """Distinct treatments each channel bucket loses: one per pair no longer seen there."""
    lost: dict[BucketKey, int] = defaultdict(int)
    for (channel, _), period, start in gone:
        lost[("channel", channel, period, start)] += 1
    return dict(lost)


def bucket_range(period: Period, start: date) -> tuple[datetime, datetime | None]:
    """The instants ``[since, until)`` of a bucket (until None: no end)."""
    if period is Period.ALLTIME:
        return datetime.min.replace(tzinfo=UTC), None
    nxt = next_bucket_start(period, start)
    since = datetime.combine(start, time(0), tzinfo=UTC)
    return since, datetime.combine(nxt, time(0), tzinfo=UTC) if nxt else None


def hot_buckets(
    tenant: str,
    deltas: dict[BucketKey, list[int]],
    now: datetime,
    outcomes: dict[tuple[BucketKey, str], int] | None = None,
) -> list[HotBucket]:
    """The negated deltas of the buckets Redis keeps at ``now``, one HotBucket per bucket
    (every bucket with custom-type deltas has counter deltas too: their events' totals)."""
    kept = oldest_kept_starts(now)
    by_bucket: dict[tuple[str, Period, date], HotBucket] = {}
    for (dimension, group, period, start), counts in sorted(deltas.items()):
        if period is not Period.ALLTIME and start < kept[period]:
            continue
        bucket = by_bucket.get((dimension, period, start))
        if bucket is None:
            bucket = HotBucket(tenant, dimension, period, start, [], [])
            by_bucket[(dimension, period, start)] = bucket
        bucket.groups.append(group)
        bucket.counts.append([-c for c in counts])
    for ((dimension, group, period, start), type_), n in sorted((outcomes or {}).items()):
        found = by_bucket.get((dimension, period, start))
        if found is not None:
            found.outcome_groups.append(group)
            found.outcome_types.append(type_)
            found.outcome_counts.append(-n)
    return list(by_bucket.values())


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure removed, per store."""

    events: int
    buckets_changed: int  # Postgres bucket rows (daily, all-time) that lost counts
    buckets_deleted: int  # ... of which no interaction is left
    distinct_pairs_deleted: int  # distinct_seen rows gone (the customer's own and channel pairs)
    distinct_pairs_changed: int  # channel pairs that lost some buckets but are still seen
    redis_batch_id: int | None
    redis_buckets: int
    redis_applied: bool  # False: the worker's catch-up loop applies it (Redis not ready)


_LOCK_EXCLUSIVE = "SELECT pg_advisory_xact_lock($1)"
_DELETE_HISTORY = """
DELETE FROM interaction_history WHERE tenant_id = $1 AND customer_id = $2
RETURNING event_id, ts, action_id, treatment_id, channel_id, type
"""
_TOMBSTONES = """
INSERT INTO erased_event (tenant_id, event_id) SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING
"""
# Whether another event of the tenant still has the (channel, treatment) pair in a bucket.
_PAIRS_STILL_SEEN = """
SELECT p.i, EXISTS (SELECT 1 FROM interaction_history AS h
                    WHERE h.tenant_id = $1 AND h.channel_id = p.channel_id
                      AND h.treatment_id = p.treatment_id
                      AND h.ts >= p.since AND (p.until IS NULL OR h.ts < p.until)) AS seen
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
    WITH ORDINALITY AS p(channel_id, treatment_id, since, until, i)
"""
_DELETE_CUSTOMER_PAIRS = """
DELETE FROM distinct_seen WHERE tenant_id = $1 AND dimension = 'customer' AND group_id = $2
"""
_DELETE_PAIR = """
DELETE FROM distinct_seen
WHERE tenant_id = $1 AND dimension = 'channel' AND group_id = $2 AND item_id = $3
"""
_DROP_PAIR_TAGS = """
UPDATE distinct_seen SET tags = ARRAY(SELECT unnest(tags) EXCEPT SELECT unnest($4::int4[]))
WHERE tenant_id = $1 AND dimension = 'channel' AND group_id = $2 AND item_id = $3
"""
_COLUMNS = [COUNTER_COLUMNS[c] for c in COUNTERS]
_KEY = ("dimension", "period", "bucket_start", "group_id")
# A bucket's shards folded into one row (shard 0) holding the rest, or no row when nothing is
# left. No batch writes meanwhile: the erasure holds the counting lock.
_SUBTRACT = f"""
WITH d AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::date[], $5::text[],
                         {", ".join(f"${i + 6}::int8[]" for i in range(len(_COLUMNS)))})
        AS d({", ".join(_KEY)}, {", ".join(_COLUMNS)})
), removed AS (
    DELETE FROM interaction_bucket AS b USING d
    WHERE b.tenant_id = $1 AND {" AND ".join(f"b.{k} = d.{k}" for k in _KEY)}
    RETURNING b.*
), sums AS (
    SELECT {", ".join(_KEY)}, {", ".join(f"sum({c})::int8 AS {c}" for c in _COLUMNS)}
    FROM removed GROUP BY {", ".join(_KEY)}
), rest AS (
    INSERT INTO interaction_bucket (tenant_id, {", ".join(_KEY)}, {", ".join(_COLUMNS)}, shard)
    SELECT $1, {", ".join(f"s.{k}" for k in _KEY)}, {", ".join(f"s.{c} - d.{c}" for c in _COLUMNS)},
           0
    FROM sums AS s JOIN d USING ({", ".join(_KEY)})
    WHERE s.total - d.total > 0
    RETURNING 1
)
SELECT (SELECT count(*) FROM sums) AS changed, (SELECT count(*) FROM rest) AS kept
"""
# The custom-type counts likewise (interaction_bucket_outcome, core/migrations/0005).
_SUBTRACT_OUTCOMES = """
WITH d AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::date[], $5::text[], $6::text[], $7::int8[])
        AS d(dimension, period, bucket_start, group_id, type, count)
), removed AS (
    DELETE FROM interaction_bucket_outcome AS b USING d
    WHERE b.tenant_id = $1 AND b.dimension = d.dimension AND b.period = d.period
      AND b.bucket_start = d.bucket_start AND b.group_id = d.group_id AND b.type = d.type
    RETURNING b.dimension, b.period, b.bucket_start, b.group_id, b.type, b.count
), sums AS (
    SELECT dimension, period, bucket_start, group_id, type, sum(count)::int8 AS count
    FROM removed GROUP BY 1, 2, 3, 4, 5
)
INSERT INTO interaction_bucket_outcome
    (tenant_id, dimension, period, bucket_start, group_id, type, shard, count)
SELECT $1, s.dimension, s.period, s.bucket_start, s.group_id, s.type, 0, s.count - d.count
FROM sums AS s JOIN d USING (dimension, period, bucket_start, group_id, type)
WHERE s.count - d.count > 0
"""
_NEXT_BATCH = "SELECT nextval('redis_batch_id')"
_OUTBOX_ROW = """
INSERT INTO redis_outbox (batch_id, tenant_id, dimension, period, bucket_start, groups, counts,
                          outcome_groups, outcome_types, outcome_counts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""


async def erase_customer(
    pool: asyncpg.Pool, redis: RedisSink, tenant: str, customer: str, now: datetime
) -> Erased:
    """Erase ``customer`` of ``tenant`` from Postgres (one transaction) and then Redis."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK_EXCLUSIVE, COUNTING_LOCK_ID)
        rows = await conn.fetch(_DELETE_HISTORY, tenant, customer)
        if not rows:
            return Erased(0, 0, 0, 0, 0, None, 0, False)
        events = [ErasedEvent(*row) for row in rows]
        await conn.execute(_TOMBSTONES, tenant, [e.event_id for e in events])
        deltas = erasure_deltas(customer, events)
        gone, unseen, changed = await _channel_pairs(conn, tenant, pair_buckets(events))
        for key, lost in channel_distinct(gone).items():
            deltas[key][COUNTERS.index("distinct")] = lost
        stored = [(k, v) for k, v in sorted(deltas.items()) if k[2] in STORED_PERIODS]
        columns = [list(col) for col in zip(*(v for _, v in stored), strict=True)]
        result = await conn.fetchrow(
            _SUBTRACT,
            tenant,
            [k[0] for k, _ in stored],
            [k[2].value for k, _ in stored],
            [k[3] for k, _ in stored],
            [k[1] for k, _ in stored],
            *columns,
        )
        assert result is not None  # the statement always answers one row
        outcomes = erasure_outcomes(customer, events)
        await _subtract_outcomes(conn, tenant, outcomes)
        status = await conn.execute(_DELETE_CUSTOMER_PAIRS, tenant, customer)
        pairs_deleted = int(status.split()[-1]) + unseen
        buckets = hot_buckets(tenant, deltas, now, outcomes)
        batch_id = await _to_outbox(conn, buckets) if buckets else None
    applied = await _apply(pool, redis, batch_id, buckets)
    return Erased(
        len(events),
        result["changed"],
        result["changed"] - result["kept"],
        pairs_deleted,
        changed,
        batch_id,
        len(buckets),
        applied,
    )


async def _channel_pairs(
    conn: Connection, tenant: str, seen: dict[Pair, set[tuple[Period, date]]]
) -> tuple[list[tuple[Pair, Period, date]], int, int]:
    """Drop the (channel, treatment) buckets no other event supports; returns them, how many
    pairs are no longer seen at all (rows deleted) and how many lost only some buckets."""
    asked = [(pair, period, start) for pair, buckets in seen.items() for period, start in buckets]
    if not asked:
        return [], 0, 0
    ranges = [bucket_range(period, start) for _, period, start in asked]
    answers = await conn.fetch(
        _PAIRS_STILL_SEEN,
        tenant,
        [pair[0] for pair, _, _ in asked],
        [pair[1] for pair, _, _ in asked],
        [since for since, _ in ranges],
        [until for _, until in ranges],
    )
    still = {row["i"] - 1 for row in answers if row["seen"]}
    gone = [asked[i] for i in range(len(asked)) if i not in still]
    unseen = {pair for pair, period, _ in gone if period is Period.ALLTIME}
    tags: dict[Pair, list[int]] = defaultdict(list)
    for pair, period, start in gone:
        if pair not in unseen:
            tags[pair].append(tag(period, start))
    if unseen:
        await conn.executemany(_DELETE_PAIR, [(tenant, *pair) for pair in sorted(unseen)])
    if tags:
        await conn.executemany(
            _DROP_PAIR_TAGS, [(tenant, *pair, values) for pair, values in sorted(tags.items())]
        )
    return gone, len(unseen), len(tags)


async def _subtract_outcomes(
    conn: Connection, tenant: str, outcomes: dict[tuple[BucketKey, str], int]
) -> None:
    stored = [(k, t, n) for (k, t), n in sorted(outcomes.items()) if k[2] in STORED_PERIODS]
    if stored:
        await conn.execute(
            _SUBTRACT_OUTCOMES,
            tenant,
            [k[0] for k, _, _ in stored],
            [k[2].value for k, _, _ in stored],
            [k[3] for k, _, _ in stored],
            [k[1] for k, _, _ in stored],
            [t for _, t, _ in stored],
            [n for _, _, n in stored],
        )


async def _to_outbox(conn: Connection, buckets: Sequence[HotBucket]) -> int:
    batch_id = int(await conn.fetchval(_NEXT_BATCH))
    await conn.executemany(
        _OUTBOX_ROW,
        [
            (
                batch_id,
                b.tenant_id,
                b.dimension,
                b.period.value,
                b.start,
                b.groups,
                b.counts,
                b.outcome_groups or None,
                b.outcome_types or None,
                b.outcome_counts or None,
            )
            for b in buckets
        ],
    )
    return batch_id


async def _apply(
    pool: asyncpg.Pool, redis: RedisSink, batch_id: int | None, buckets: Sequence[HotBucket]
) -> bool:
    """Apply the committed erasure to Redis now; on any trouble the outbox keeps it."""
    if batch_id is None:
        return True
    try:
        epoch = (await mirror_state(pool)).epoch  # the Redis state Postgres vouches for
        if await redis.apply(batch_id, buckets, epoch) == NOT_READY:
            return False
        await outbox.forget(pool, [batch_id], epoch)
    except Exception as exc:  # Redis or Postgres away: the worker's catch-up loop applies it
        log.warning("erasure redis apply deferred batch_id=%d error=%r", batch_id, exc)
        return False
    return True
