"""Counts one batch in Postgres with one statement in one transaction.

The statement takes the batch's events once, as columns, and does everything else itself:
- the fence insert (``event_seen``, primary key (tenant, event id)) decides which events are
  new: the exactly-once fence; a batch replayed after a crash finds its events present and adds
  nothing; only the new events go to the history (partitioned by month, migration 0008);
- the new events' deltas are aggregated per (dimension, group, period bucket);
- each (customer, action) and (channel, treatment) pair adds the tags of its buckets to
  ``distinct_seen``; the tags it adds are the new distinct items of those buckets;
- the daily and all-time buckets are upserted (weekly and monthly are sums of days);
- events of a type without a column of its own (custom outcome types) are also counted per
  type in ``interaction_bucket_outcome``: rows only for the events that have such a type;
- the deltas of the buckets Redis keeps go to the outbox and come back to the caller, which
  hands them to Redis.

Rows are written in key order, so two workers lock shared rows in the same order.
Measured with ``python -m bench.ingest``; bench/README.md has the figures and what was tried.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from core.distinct import period_of_tag_sql, start_of_tag_sql, tag_sql
from core.hot import oldest_kept_starts
from core.periods import PERIOD_START_SQL, STORED_PERIODS, UTC_DAY_SQL, Period
from core.schema import COUNTERS, DIMENSION_COLUMNS, SYSTEM_TYPES
from streams.counters import unique_by_id
from streams.events import Interaction
from streams.outbox import HotBucket, hot_bucket

# Dimensions counting distinct items: dimension -> (group column, item column).
DISTINCT_ITEMS: dict[str, tuple[str, str]] = {
    "customer": ("customer_id", "action_id"),
    "channel": ("channel_id", "treatment_id"),
}

_COUNT_COLUMNS = [*SYSTEM_TYPES, "total"]  # COUNTERS without "distinct"
assert [*_COUNT_COLUMNS, "distinct"] == list(COUNTERS)
_SYSTEM_LIST = ", ".join(f"'{t}'" for t in SYSTEM_TYPES)
_KEY = "tenant_id, dimension, period, bucket_start, group_id"


def sql_values(rows: list[str]) -> str:
    return ", ".join(f"({row})" for row in rows)


def _write_batch_sql() -> str:
    dimensions = sql_values([f"'{d}' COLLATE \"C\", n.{c}" for d, c in DIMENSION_COLUMNS.items()])
    # int4 counts: sum(int4) adds in int8, sum(int8) in numeric (several times slower)
    type_counts = ",\n           ".join(
        [
            *(f"(count(*) FILTER (WHERE n.type = '{t}'))::int4 AS {t}" for t in SYSTEM_TYPES),
            "count(*)::int4",
        ]
    )
    count_list = ", ".join(_COUNT_COLUMNS)
    pairs = sql_values(
        [f"'{d}' COLLATE \"C\", n.{g}, n.{i}" for d, (g, i) in DISTINCT_ITEMS.items()]
    )
    tags = sql_values([tag_sql(p, "n.day") for p in (Period.DAILY, Period.WEEKLY, Period.MONTHLY)])
    periods = sql_values(
        [f"'{p.value}', {PERIOD_START_SQL[p].format(day='d.day')}" for p in Period]
    )
    sums = ", ".join(f"sum({c})::int8 AS {c}" for c in [*_COUNT_COLUMNS, "distinct_count"])
    stored = ", ".join(f"'{p.value}'" for p in STORED_PERIODS)
    increments = ",\n        ".join(
        f"{c} = b.{c} + excluded.{c}" for c in [*_COUNT_COLUMNS, "distinct_count"]
    )
    zeros = ", ".join("0::int4" for _ in _COUNT_COLUMNS)
    hot = """period = 'alltime'
       OR (period = 'daily' AND bucket_start >= $10::date)
       OR (period = 'weekly' AND bucket_start >= $11::date)
       OR (period = 'monthly' AND bucket_start >= $12::date)"""
    return f"""
WITH batch AS (
    -- Byte order ("C") for every text the statement sorts or groups: memcmp, not the locale.
    SELECT tenant_id COLLATE "C" AS tenant_id, event_id COLLATE "C" AS event_id, ts,
           customer_id COLLATE "C" AS customer_id, action_id COLLATE "C" AS action_id,
           treatment_id COLLATE "C" AS treatment_id, channel_id COLLATE "C" AS channel_id, type,
           direction
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                $6::text[], $7::text[], $8::text[], $9::text[])
        AS u(tenant_id, event_id, ts, customer_id, action_id, treatment_id, channel_id, type,
             direction)
), fenced AS (
    -- The exactly-once fence (migration 0008): the ids this insert returns are new.
    INSERT INTO event_seen (tenant_id, event_id, ts)
    SELECT tenant_id, event_id, ts FROM batch AS b
    -- erased events were seen: republished, they count as duplicates (streams/erasure.py)
    WHERE NOT EXISTS (SELECT 1 FROM erased_event AS x
                      WHERE x.tenant_id = b.tenant_id AND x.event_id = b.event_id)
    ORDER BY tenant_id, event_id
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING tenant_id, event_id
), new AS (
    INSERT INTO interaction_history
        (tenant_id, event_id, ts, customer_id, action_id, treatment_id, channel_id, type,
         direction)
    SELECT b.* FROM batch AS b JOIN fenced AS f USING (tenant_id, event_id)
    RETURNING tenant_id, {UTC_DAY_SQL.format(ts="ts")} AS day, customer_id, action_id,
              treatment_id, channel_id, type
), by_day AS (
    SELECT n.tenant_id, g.dimension, g.group_id, n.day,
           {type_counts} AS total
    FROM new AS n CROSS JOIN LATERAL (VALUES {dimensions}) AS g(dimension, group_id)
    WHERE g.group_id IS NOT NULL
    GROUP BY 1, 2, 3, 4
), pair_tags AS (
    -- DISTINCT, then a plain array_agg: both hash; array_agg(DISTINCT) would sort
    SELECT DISTINCT n.tenant_id, p.dimension, p.group_id, p.item_id, t.tag
    FROM new AS n
    CROSS JOIN LATERAL (VALUES {pairs}) AS p(dimension, group_id, item_id)
    CROSS JOIN LATERAL (VALUES {tags}) AS t(tag)
    WHERE p.group_id IS NOT NULL AND p.item_id IS NOT NULL
), pairs AS (
    SELECT tenant_id, dimension, group_id, item_id, array_agg(tag) AS tags
    FROM pair_tags GROUP BY 1, 2, 3, 4
), seen AS (
    -- The anti-join skips pairs that already hold every tag without locking their rows.
    INSERT INTO distinct_seen AS s (tenant_id, dimension, group_id, item_id, tags, added)
    SELECT p.tenant_id, p.dimension, p.group_id, p.item_id, p.tags, p.tags FROM pairs AS p
    WHERE NOT EXISTS (SELECT 1 FROM distinct_seen AS x
                      WHERE x.tenant_id = p.tenant_id AND x.dimension = p.dimension
                        AND x.group_id = p.group_id AND x.item_id = p.item_id
                        AND x.tags @> p.tags)
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (tenant_id, dimension, group_id, item_id) DO UPDATE
        SET added = ARRAY(SELECT unnest(excluded.tags) EXCEPT SELECT unnest(s.tags)),
            tags = s.tags || ARRAY(SELECT unnest(excluded.tags) EXCEPT SELECT unnest(s.tags))
        WHERE NOT s.tags @> excluded.tags
    RETURNING s.tenant_id, s.dimension, s.group_id, s.added, (s.xmax = 0) AS inserted
), firsts AS (
    SELECT tenant_id, dimension, group_id, 'alltime' COLLATE "C" AS period,
           '-infinity'::date AS bucket_start
    FROM seen WHERE inserted
    UNION ALL
    SELECT s.tenant_id, s.dimension, s.group_id, {period_of_tag_sql("t")}, {start_of_tag_sql("t")}
    FROM seen AS s CROSS JOIN LATERAL unnest(s.added) AS t
), deltas AS (
    SELECT {_KEY}, {sums}
    FROM (
        SELECT d.tenant_id, d.dimension, p.period, p.bucket_start, d.group_id, {count_list},
               0::int4 AS distinct_count
        FROM by_day AS d CROSS JOIN LATERAL (VALUES {periods}) AS p(period, bucket_start)
        UNION ALL
        SELECT {_KEY}, {zeros}, 1::int4 FROM firsts
    ) AS parts
    GROUP BY 1, 2, 3, 4, 5
), upserted AS (
    INSERT INTO interaction_bucket AS b ({_KEY}, {count_list}, distinct_count, shard)
    SELECT *, $13::int2 FROM deltas WHERE period IN ({stored})
    ORDER BY {_KEY}
    ON CONFLICT ({_KEY}, shard) DO UPDATE SET
        {increments}
), custom_by_day AS (
    -- Types without a column: empty (one pass over the batch) unless the batch has some.
    SELECT n.tenant_id, g.dimension, g.group_id, n.day, n.type COLLATE "C" AS type,
           count(*)::int4 AS n
    FROM new AS n CROSS JOIN LATERAL (VALUES {dimensions}) AS g(dimension, group_id)
    WHERE n.type NOT IN ({_SYSTEM_LIST}) AND g.group_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
), custom_deltas AS (
    SELECT d.tenant_id, d.dimension, p.period, p.bucket_start, d.group_id, d.type,
           sum(d.n)::int8 AS n
    FROM custom_by_day AS d CROSS JOIN LATERAL (VALUES {periods}) AS p(period, bucket_start)
    GROUP BY 1, 2, 3, 4, 5, 6
), custom_upserted AS (
    INSERT INTO interaction_bucket_outcome AS o ({_KEY}, type, shard, count)
    SELECT tenant_id, dimension, period, bucket_start, group_id, type, $13::int2, n
    FROM custom_deltas WHERE period IN ({stored})
    ORDER BY {_KEY}, type
    ON CONFLICT ({_KEY}, type, shard) DO UPDATE SET count = o.count + excluded.count
), custom_hot AS (
    SELECT tenant_id, dimension, period, bucket_start, array_agg(group_id) AS groups,
           array_agg(type) AS types, array_agg(n) AS counts
    FROM custom_deltas WHERE {hot}
    GROUP BY 1, 2, 3, 4
), batch_id AS (
    SELECT nextval('redis_batch_id') AS id
), outbox AS (
    -- Every bucket with custom deltas has counter deltas too (its events count in total).
    INSERT INTO redis_outbox (batch_id, tenant_id, dimension, period, bucket_start, groups, counts,
                              outcome_groups, outcome_types, outcome_counts)
    SELECT (SELECT id FROM batch_id), m.*, c.groups, c.types, c.counts
    FROM (SELECT tenant_id, dimension, period, bucket_start, array_agg(group_id),
                 array_agg(ARRAY[{count_list}, distinct_count])
          FROM deltas WHERE {hot}
          GROUP BY tenant_id, dimension, period, bucket_start) AS m
    LEFT JOIN custom_hot AS c USING (tenant_id, dimension, period, bucket_start)
    RETURNING batch_id, tenant_id, dimension, period, bucket_start, groups, counts,
              outcome_groups, outcome_types, outcome_counts
)
-- upserted and custom_upserted are referenced nowhere: Postgres runs every data-modifying
-- CTE to completion all the same.
SELECT (SELECT count(*) FROM new) AS new_events,
       o.batch_id, o.tenant_id, o.dimension, o.period, o.bucket_start, o.groups, o.counts,
       o.outcome_groups, o.outcome_types, o.outcome_counts
FROM (VALUES (1)) AS one LEFT JOIN outbox AS o ON true
"""


WRITE_BATCH = _write_batch_sql()

# Batches count under this advisory lock taken shared; an erasure or a retention run takes it
# exclusive, so it sees no batch half-counted and no batch sees it half-done
# (streams/erasure.py, streams/retention.py). Taken by a statement of its own before
# WRITE_BATCH: in READ COMMITTED each statement takes a new snapshot, so WRITE_BATCH then sees
# everything an erasure committed. The same statement reads the retention horizon: no event
# older than it is counted (core/retention.py), and it cannot move while the batch counts.
COUNTING_LOCK_ID = 0x1A7E_C0DE
# The same statement gives the transaction the memory its aggregates need: at the default
# 4 MB the hash aggregates of a 5,000-event batch spilled to temporary files.
COUNTING_SHARED = """
SELECT pg_advisory_xact_lock_shared($1), (SELECT events_from FROM retention_horizon),
       set_config('work_mem', $2, true)
"""
WRITE_WORK_MEM = "64MB"


@dataclass(frozen=True, slots=True)
class WrittenBatch:
    """What one committed batch changed; ``batch_id`` is None when Redis has nothing to apply."""

    batch_id: int | None
    new_events: int
    duplicates: int
    buckets: list[HotBucket]
    # Events older than the retention horizon: not counted, the caller dead-letters them.
    expired: list[Interaction] = field(default_factory=list)
    events_from: datetime | None = None


# Shards a worker may write (core/migrations/0002_write_path.sql): more than workers ever run.
SHARDS = 16


def own_shards(lanes: int) -> list[int]:
    """This process's shards, one per commit lane: distinct processes rarely share one, and
    when they do they only wait for each other's row locks, they count the same."""
    return [(os.getpid() * lanes + lane) % SHARDS for lane in range(lanes)]


async def write_batch(
    pool: asyncpg.Pool, events: Sequence[Interaction], now: datetime, shard: int = 0
) -> WrittenBatch:
    """Commit the batch's new events and their counters atomically, into bucket ``shard``.

    ``now`` decides which buckets Redis still keeps (their deltas go to the outbox).
    """
    kept = oldest_kept_starts(now)
    async with pool.acquire() as conn, conn.transaction():
        locked = await conn.fetchrow(COUNTING_SHARED, COUNTING_LOCK_ID, WRITE_WORK_MEM)
        events_from: datetime | None = locked[1] if locked is not None else None
        counted, expired = split_expired(events, events_from)
        unique = unique_by_id(counted)
        if not unique:
            return WrittenBatch(None, 0, len(events) - len(expired), [], expired, events_from)
        rows = await conn.fetch(
            WRITE_BATCH,
            *_history_columns(unique),
            kept[Period.DAILY],
            kept[Period.WEEKLY],
            kept[Period.MONTHLY],
            shard,
        )
    new_events = rows[0]["new_events"]
    buckets = [hot_bucket(row) for row in rows if row["batch_id"] is not None]
    batch_id = rows[0]["batch_id"] if buckets else None
    duplicates = len(events) - new_events - len(expired)
    return WrittenBatch(batch_id, new_events, duplicates, buckets, expired, events_from)


def split_expired(
    events: Sequence[Interaction], events_from: datetime | None
) -> tuple[list[Interaction], list[Interaction]]:
    """(events to count, events older than the retention horizon ``events_from``) (pure)."""
    if events_from is None:
        return list(events), []
    kept = [e for e in events if e.timestamp >= events_from]
    if len(kept) == len(events):
        return kept, []
    return kept, [e for e in events if e.timestamp < events_from]


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
        [e.direction for e in events],
    ]
