"""Every Postgres read of the API: bucket pages, rolling sums, raw-history aggregation.

Dimension names never reach SQL as text from a request: each dimension maps to a query
built here at import time from a fixed table. Every request value is a bound parameter.
"""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from api.summary import GroupBy, GroupCounts, Page
from core.db import Connection
from core.periods import Period

_COUNTER_COLUMNS = "impression, click, dismiss, accept, convert, total"

PERIOD_HAS_DATA = """
SELECT EXISTS (SELECT 1 FROM interaction_bucket
               WHERE tenant_id = $1 AND dimension = 'action' AND period = $2 AND bucket_start = $3)
"""

PERIOD_PAGE = f"""
SELECT group_id, {_COUNTER_COLUMNS}, distinct_count, count(*) OVER () AS groups
FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = $2 AND period = $3 AND bucket_start = $4
ORDER BY total DESC, group_id
LIMIT $5 OFFSET $6
"""
PERIOD_COUNT = """
SELECT count(*) FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = $2 AND period = $3 AND bucket_start = $4
"""

ROLLING_HAS_DATA = """
SELECT EXISTS (SELECT 1 FROM interaction_bucket
               WHERE tenant_id = $1 AND dimension = 'action' AND period = 'daily'
                 AND bucket_start BETWEEN $2 AND $3)
"""
ROLLING_PAGE = """
SELECT group_id, sum(impression)::int8 AS impression, sum(click)::int8 AS click,
       sum(dismiss)::int8 AS dismiss, sum(accept)::int8 AS accept,
       sum(convert)::int8 AS convert, sum(total)::int8 AS total, 0::int8 AS distinct_count,
       count(*) OVER () AS groups
FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = $2 AND period = 'daily' AND bucket_start BETWEEN $3 AND $4
GROUP BY group_id
ORDER BY total DESC, group_id
LIMIT $5 OFFSET $6
"""
ROLLING_COUNT = """
SELECT count(DISTINCT group_id) FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = $2 AND period = 'daily' AND bucket_start BETWEEN $3 AND $4
"""
# Distinct items over several days cannot be summed from daily counts: count the pairs.
ROLLING_DISTINCT = """
SELECT group_id, count(DISTINCT item_id) AS n FROM bucket_distinct
WHERE tenant_id = $1 AND dimension = $2 AND period = 'daily' AND bucket_start BETWEEN $3 AND $4
  AND group_id = ANY($5::text[])
GROUP BY group_id
"""

# Raw history, per dimension: (group column, distinct-item expression, extra filter).
_HISTORY_SHAPES: dict[GroupBy, tuple[str, str, str]] = {
    GroupBy.ACTION: ("action_id", "0", ""),
    GroupBy.TREATMENT: ("treatment_id", "0", "AND treatment_id IS NOT NULL"),
    GroupBy.CHANNEL: (
        "channel_id",
        "count(DISTINCT treatment_id)",
        "AND channel_id IS NOT NULL",
    ),
    GroupBy.CUSTOMER: ("customer_id", "count(DISTINCT action_id)", ""),
}
_HISTORY_RANGE = "tenant_id = $1 AND ts >= $2 AND ($3::timestamptz IS NULL OR ts < $3)"


def _history_page_sql(column: str, distinct: str, extra: str) -> str:
    return f"""
SELECT {column} AS group_id,
       count(*) FILTER (WHERE type = 'impression') AS impression,
       count(*) FILTER (WHERE type = 'click') AS click,
       count(*) FILTER (WHERE type = 'dismiss') AS dismiss,
       count(*) FILTER (WHERE type = 'accept') AS accept,
       count(*) FILTER (WHERE type = 'convert') AS convert,
       count(*) AS total,
       {distinct} AS distinct_count,
       count(*) OVER () AS groups
FROM interaction_history
WHERE {_HISTORY_RANGE} {extra}
GROUP BY {column}
ORDER BY total DESC, group_id
LIMIT $4 OFFSET $5
"""


def _history_count_sql(column: str, extra: str) -> str:
    return (
        f"SELECT count(DISTINCT {column}) FROM interaction_history WHERE {_HISTORY_RANGE} {extra}"
    )


HISTORY_PAGE = {g: _history_page_sql(*shape) for g, shape in _HISTORY_SHAPES.items()}
HISTORY_COUNT = {g: _history_count_sql(shape[0], shape[2]) for g, shape in _HISTORY_SHAPES.items()}

TIMESERIES_BUCKETS = f"""
SELECT bucket_start AS day, {", ".join(f"sum({c})::int8 AS {c}" for c in _COUNTER_COLUMNS.split(", "))}
FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = 'action' AND period = 'daily' AND bucket_start BETWEEN $2 AND $3
GROUP BY bucket_start
"""
TIMESERIES_HISTORY = """
SELECT (ts AT TIME ZONE 'UTC')::date AS day,
       count(*) FILTER (WHERE type = 'impression') AS impression,
       count(*) FILTER (WHERE type = 'click') AS click,
       count(*) FILTER (WHERE type = 'dismiss') AS dismiss,
       count(*) FILTER (WHERE type = 'accept') AS accept,
       count(*) FILTER (WHERE type = 'convert') AS convert,
       count(*) AS total
FROM interaction_history
WHERE tenant_id = $1 AND ts >= $2 AND ts < $3
GROUP BY 1
"""


def _page(records: list[asyncpg.Record], total_groups: int) -> Page:
    groups = [
        GroupCounts(
            r["group_id"],
            r["impression"],
            r["click"],
            r["dismiss"],
            r["accept"],
            r["convert"],
            r["total"],
            r["distinct_count"],
        )
        for r in records
    ]
    return Page(total_groups, groups)


async def _paged(
    conn: Connection,
    page_sql: str,
    count_sql: str,
    args: tuple[object, ...],
    limit: int,
    offset: int,
) -> Page:
    """Run a page query; the group count rides along (window count) unless the page is empty."""
    records = await conn.fetch(page_sql, *args, limit, offset)
    if records:
        return _page(records, records[0]["groups"])
    total = 0 if offset == 0 else await conn.fetchval(count_sql, *args)
    return _page([], total)


async def period_page(
    pool: asyncpg.Pool,
    tenant: str,
    group_by: GroupBy,
    period: Period,
    start: date,
    limit: int,
    offset: int,
) -> Page | None:
    """A page from one period's buckets; None when the period has no bucket at all."""
    async with pool.acquire() as conn:
        if not await conn.fetchval(PERIOD_HAS_DATA, tenant, period, start):
            return None
        args = (tenant, group_by.value, period.value, start)
        return await _paged(conn, PERIOD_PAGE, PERIOD_COUNT, args, limit, offset)


async def rolling_page(
    pool: asyncpg.Pool,
    tenant: str,
    group_by: GroupBy,
    first: date,
    last: date,
    limit: int,
    offset: int,
) -> Page | None:
    """A page summed over daily buckets ``first..last``; None when none of them has data."""
    async with pool.acquire() as conn:
        if not await conn.fetchval(ROLLING_HAS_DATA, tenant, first, last):
            return None
        args = (tenant, group_by.value, first, last)
        page = await _paged(conn, ROLLING_PAGE, ROLLING_COUNT, args, limit, offset)
        if group_by in (GroupBy.CUSTOMER, GroupBy.CHANNEL) and page.groups:
            ids = [g.group_id for g in page.groups]
            found = await conn.fetch(ROLLING_DISTINCT, *args, ids)
            distinct = {r["group_id"]: r["n"] for r in found}
            page = Page(
                page.total_groups,
                [_with_distinct(g, distinct.get(g.group_id, 0)) for g in page.groups],
            )
        return page


def _with_distinct(g: GroupCounts, n: int) -> GroupCounts:
    return GroupCounts(
        g.group_id, g.impression, g.click, g.dismiss, g.accept, g.convert, g.total, n
    )


async def history_page(
    pool: asyncpg.Pool,
    tenant: str,
    group_by: GroupBy,
    start: datetime,
    end: datetime | None,
    limit: int,
    offset: int,
) -> Page:
    """The same page aggregated from raw history over ``[start, end)``."""
    async with pool.acquire() as conn:
        args = (tenant, start, end)
        return await _paged(
            conn, HISTORY_PAGE[group_by], HISTORY_COUNT[group_by], args, limit, offset
        )


async def daily_totals(
    pool: asyncpg.Pool, tenant: str, first: date, last: date, start: datetime, end: datetime
) -> tuple[dict[date, asyncpg.Record], bool]:
    """Per-day counters from daily buckets, or from raw history when no bucket has data.

    Returns the rows by day and whether they came from history.
    """
    async with pool.acquire() as conn:
        rows = await conn.fetch(TIMESERIES_BUCKETS, tenant, first, last)
        if rows:
            return {r["day"]: r for r in rows}, False
        rows = await conn.fetch(TIMESERIES_HISTORY, tenant, start, end)
        return {r["day"]: r for r in rows}, True
