"""Re-materialize every bucket from the raw history table (repair, or after a bucketing change).

Runs in one transaction that locks the bucket tables first, in the same order the worker
writes them: a worker batch either committed before (and is in the history read here) or
waits and adds its deltas on top of the rebuilt counters afterwards. Redis is resynced
from the result.
"""

from __future__ import annotations

import asyncio

import asyncpg

from streams.redis_sink import RedisSink

# Same UTC bucketing as core.periods, in SQL: date_trunc('week') is the ISO Monday.
# asyncpg sends date(1, 1, 1) (the all-time bucket start, core.periods.ALLTIME_START) as
# '-infinity'::date, so that is what the worker's rows hold: the rebuild must write the same
# value, or the worker's later increments go to rows other than the rebuilt ones.
_EVENT_BUCKETS = """
WITH e AS (
    SELECT tenant_id, ts AT TIME ZONE 'UTC' AS t, customer_id, action_id, treatment_id,
           channel_id, type
    FROM interaction_history
), b AS (
    SELECT e.tenant_id, e.customer_id, e.action_id, e.treatment_id, e.channel_id, e.type,
           p.period,
           CASE p.period
               WHEN 'daily' THEN date_trunc('day', e.t)::date
               WHEN 'weekly' THEN date_trunc('week', e.t)::date
               WHEN 'monthly' THEN date_trunc('month', e.t)::date
               ELSE '-infinity'::date
           END AS bucket_start
    FROM e CROSS JOIN (VALUES ('daily'), ('weekly'), ('monthly'), ('alltime')) AS p(period)
)
SELECT tenant_id, customer_id, action_id, treatment_id, channel_id, type, period,
       CASE WHEN bucket_start = DATE '0001-01-01' THEN '-infinity'::date
            ELSE bucket_start END AS bucket_start
FROM b
"""

REBUILD_STATEMENTS = (
    "LOCK TABLE bucket_distinct IN ACCESS EXCLUSIVE MODE",
    "LOCK TABLE interaction_bucket IN ACCESS EXCLUSIVE MODE",
    "TRUNCATE bucket_distinct, interaction_bucket",
    f"""
    INSERT INTO interaction_bucket
        (tenant_id, dimension, period, bucket_start, group_id,
         impression, click, dismiss, accept, convert, total, distinct_count)
    SELECT b.tenant_id, d.dimension, b.period, b.bucket_start, d.group_id,
           count(*) FILTER (WHERE b.type = 'impression'),
           count(*) FILTER (WHERE b.type = 'click'),
           count(*) FILTER (WHERE b.type = 'dismiss'),
           count(*) FILTER (WHERE b.type = 'accept'),
           count(*) FILTER (WHERE b.type = 'convert'),
           count(*),
           0
    FROM ({_EVENT_BUCKETS}) AS b
    CROSS JOIN LATERAL (VALUES ('action', b.action_id), ('treatment', b.treatment_id),
                               ('channel', b.channel_id), ('customer', b.customer_id))
        AS d(dimension, group_id)
    WHERE d.group_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    """,
    f"""
    INSERT INTO bucket_distinct (tenant_id, dimension, period, bucket_start, group_id, item_id)
    SELECT DISTINCT b.tenant_id, 'customer', b.period, b.bucket_start, b.customer_id, b.action_id
    FROM ({_EVENT_BUCKETS}) AS b
    UNION
    SELECT DISTINCT b.tenant_id, 'channel', b.period, b.bucket_start, b.channel_id, b.treatment_id
    FROM ({_EVENT_BUCKETS}) AS b
    WHERE b.channel_id IS NOT NULL AND b.treatment_id IS NOT NULL
    """,
    """
    UPDATE interaction_bucket AS t SET distinct_count = d.n
    FROM (SELECT tenant_id, dimension, period, bucket_start, group_id, count(*) AS n
          FROM bucket_distinct GROUP BY 1, 2, 3, 4, 5) AS d
    WHERE t.tenant_id = d.tenant_id AND t.dimension = d.dimension AND t.period = d.period
      AND t.bucket_start = d.bucket_start AND t.group_id = d.group_id
    """,
)


async def rebuild_postgres(pool: asyncpg.Pool) -> int:
    """Recount every bucket from history; returns the number of bucket rows."""
    async with pool.acquire() as conn, conn.transaction():
        for statement in REBUILD_STATEMENTS:
            await conn.execute(statement)
        count: int = await conn.fetchval("SELECT count(*) FROM interaction_bucket")
    return count


async def rebuild(pool: asyncpg.Pool, redis_sink: RedisSink) -> int:
    """Rebuild Postgres buckets from history, then Redis from Postgres."""
    count = await rebuild_postgres(pool)
    # A worker may be resyncing right now (advisory lock in Postgres): ours must run after it.
    while not await redis_sink.resync():  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    return count
