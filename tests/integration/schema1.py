"""A database as the first schema (core/migrations/0001_initial.sql) and its write path left
it: every bucket of the four periods, one distinct-pair row per pair and bucket, and an outbox
row in the first JSON format. Reproduced with the first write path's own rebuild statements
(streams/rebuild.py at commit 85c8524), which tests of that version showed equal to the
worker's counting."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from core.db import Connection
from tests.recount import Event

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

MATERIALIZE = (
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

BucketId = tuple[str, str, str, date, str]


async def fill(conn: Connection, events: list[Event]) -> None:
    """History and every schema-1 bucket of ``events``."""
    await conn.executemany(
        "INSERT INTO interaction_history (tenant_id, event_id, ts, customer_id, action_id,"
        " treatment_id, channel_id, type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (e.tenant, e.id, e.ts, e.customer, e.action, e.treatment, e.channel, e.type)
            for e in events
        ],
    )
    for statement in MATERIALIZE:
        await conn.execute(statement)


async def buckets(conn: Connection) -> dict[BucketId, tuple[int, ...]]:
    rows = await conn.fetch(
        "SELECT tenant_id, dimension, period, bucket_start, group_id, impression, click,"
        " dismiss, accept, convert, total, distinct_count FROM interaction_bucket"
    )
    return {(r[0], r[1], r[2], r[3], r[4]): tuple(r[5:]) for r in rows}


def outbox_payload(rows: dict[BucketId, tuple[int, ...]]) -> bytes:
    """The first schema's outbox form: sorted JSON rows [tenant, dimension, period, start,
    group, *counters]."""
    return orjson.dumps(
        [[t, d, p, s.isoformat(), g, *counts] for (t, d, p, s, g), counts in sorted(rows.items())]
    )


def rows_of(payload: bytes) -> list[list[Any]]:
    return list(orjson.loads(payload))
