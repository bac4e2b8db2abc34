"""Re-materialize every bucket from the raw history table (repair, or after a bucketing change).

Runs in one transaction that locks the bucket tables first, in the same order the worker
writes them: a worker batch either committed before (and is in the history read here) or
waits and adds its deltas on top of the rebuilt counters afterwards. Redis is resynced
from the result.
"""

from __future__ import annotations

import asyncio

import asyncpg

from core.distinct import TAG_CODES, start_of_tag_sql, tag_sql
from core.periods import PERIOD_START_SQL, STORED_PERIODS, UTC_DAY_SQL, Period
from core.schema import COUNTER_COLUMNS, DIMENSION_COLUMNS, SYSTEM_TYPES
from streams.postgres_sink import DISTINCT_ITEMS, sql_values
from streams.redis_sink import RedisSink

_COUNTS = ",\n           ".join(
    [*(f"count(*) FILTER (WHERE b.type = '{t}')" for t in SYSTEM_TYPES), "count(*)"]
)
_STORED = sql_values(
    [f"'{p.value}', {PERIOD_START_SQL[p].format(day='e.day')}" for p in STORED_PERIODS]
)
_DIMENSIONS = sql_values([f"'{d}', b.{c}" for d, c in DIMENSION_COLUMNS.items()])
_PAIRS = sql_values([f"'{d}', e.{g}, e.{i}" for d, (g, i) in DISTINCT_ITEMS.items()])
_TAGS = sql_values([tag_sql(p, "e.day") for p in TAG_CODES])
_COLUMNS = ", ".join(COUNTER_COLUMNS.values())
_SYSTEM_LIST = ", ".join(f"'{t}'" for t in SYSTEM_TYPES)
_EVENTS = f"""
    SELECT tenant_id, {UTC_DAY_SQL.format(ts="ts")} AS day, customer_id, action_id,
           treatment_id, channel_id, type
    FROM interaction_history
"""

REBUILD_STATEMENTS = (
    "LOCK TABLE distinct_seen IN ACCESS EXCLUSIVE MODE",
    "LOCK TABLE interaction_bucket IN ACCESS EXCLUSIVE MODE",
    "LOCK TABLE interaction_bucket_outcome IN ACCESS EXCLUSIVE MODE",
    "TRUNCATE distinct_seen, interaction_bucket, interaction_bucket_outcome",
    f"""
    INSERT INTO interaction_bucket
        (tenant_id, dimension, period, bucket_start, group_id, {_COLUMNS})
    SELECT b.tenant_id, d.dimension, b.period, b.bucket_start, d.group_id,
           {_COUNTS},
           0
    FROM (SELECT e.*, p.period, p.bucket_start
          FROM ({_EVENTS}) AS e CROSS JOIN LATERAL (VALUES {_STORED}) AS p(period, bucket_start)
         ) AS b
    CROSS JOIN LATERAL (VALUES {_DIMENSIONS}) AS d(dimension, group_id)
    WHERE d.group_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    """,
    f"""
    INSERT INTO interaction_bucket_outcome
        (tenant_id, dimension, period, bucket_start, group_id, type, count)
    SELECT b.tenant_id, d.dimension, b.period, b.bucket_start, d.group_id, b.type, count(*)
    FROM (SELECT e.*, p.period, p.bucket_start
          FROM ({_EVENTS}) AS e CROSS JOIN LATERAL (VALUES {_STORED}) AS p(period, bucket_start)
          WHERE e.type NOT IN ({_SYSTEM_LIST})
         ) AS b
    CROSS JOIN LATERAL (VALUES {_DIMENSIONS}) AS d(dimension, group_id)
    WHERE d.group_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6
    """,
    f"""
    INSERT INTO distinct_seen (tenant_id, dimension, group_id, item_id, tags, added)
    SELECT e.tenant_id, p.dimension, p.group_id, p.item_id, array_agg(DISTINCT t.tag), '{{}}'
    FROM ({_EVENTS}) AS e
    CROSS JOIN LATERAL (VALUES {_PAIRS}) AS p(dimension, group_id, item_id)
    CROSS JOIN LATERAL (VALUES {_TAGS}) AS t(tag)
    WHERE p.group_id IS NOT NULL AND p.item_id IS NOT NULL
    GROUP BY 1, 2, 3, 4
    """,
    f"""
    UPDATE interaction_bucket AS t SET distinct_count = d.n
    FROM (SELECT tenant_id, dimension, 'daily' AS period, {start_of_tag_sql("tag")} AS bucket_start,
                 group_id, count(*) AS n
          FROM distinct_seen CROSS JOIN LATERAL unnest(tags) AS tag
          WHERE tag % 4 = {TAG_CODES[Period.DAILY]}
          GROUP BY 1, 2, 3, 4, 5
          UNION ALL
          SELECT tenant_id, dimension, 'alltime', '-infinity'::date, group_id, count(*)
          FROM distinct_seen GROUP BY 1, 2, 3, 4, 5) AS d
    WHERE t.tenant_id = d.tenant_id AND t.dimension = d.dimension AND t.period = d.period
      AND t.bucket_start = d.bucket_start AND t.group_id = d.group_id
    """,
)


# Where retention cut the history (a schema before 0008, as older-schema tests recount, has
# no retention).
_RETENTION_EXISTS = "SELECT to_regclass('retention_horizon') IS NOT NULL"
_HISTORY_DROPPED = "SELECT history_from FROM retention_horizon"


class HistoryIncomplete(RuntimeError):
    """Retention has dropped history: a recount from what is left would lose counts."""


async def rebuild_postgres(pool: asyncpg.Pool) -> int:
    """Recount every bucket from history; returns the number of bucket rows.

    Refuses (HistoryIncomplete) once retention has dropped history: the all-time buckets
    hold events the history no longer has, and a recount would lose them.
    """
    async with pool.acquire() as conn, conn.transaction():
        exists = await conn.fetchval(_RETENTION_EXISTS)
        dropped = await conn.fetchval(_HISTORY_DROPPED) if exists else None
        if dropped is not None:
            raise HistoryIncomplete(
                f"retention has dropped the history before {dropped.isoformat()}"
                " (INTERACTION_SUMMARY_RETENTION_HISTORY_DAYS): a rebuild from the history left"
                " would lose the all-time counts of everything older; refusing"
            )
        for statement in REBUILD_STATEMENTS:
            await conn.execute(statement)
        count: int = await conn.fetchval("SELECT count(*) FROM interaction_bucket")
    return count


async def rebuild(pool: asyncpg.Pool, redis_sink: RedisSink) -> int:
    """Rebuild Postgres buckets from history, then Redis from Postgres."""
    count = await rebuild_postgres(pool)
    # A worker may be resyncing right now (advisory lock in Postgres): ours must run after it.
    while not await redis_sink.resync(pool):  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    return count
