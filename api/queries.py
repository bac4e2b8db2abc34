"""Every Postgres read of the API: bucket pages, rolling sums, raw-history aggregation.

Dimension names never reach SQL as text from a request: each dimension maps to a query
built here at import time from a fixed table. Every request value is a bound parameter.
"""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from api.summary import GroupBy, GroupCounts, Page
from core.db import Connection
from core.distinct import TAG_CODES, tag
from core.periods import Period, days_of
from core.schema import DIMENSION_COLUMNS, ROW_COUNTERS, SYSTEM_TYPES

_TYPES = SYSTEM_TYPES
_SYSTEM_LIST = ", ".join(f"'{t}'" for t in SYSTEM_TYPES)
_TYPE_SUMS = ", ".join([*(f"sum({t})::int8 AS {t}" for t in _TYPES), "sum(total)::int8 AS total"])

# Daily and all-time buckets are stored; a page of one is a top-N sort of its groups (there is
# no index on the counters, so that increments stay HOT updates: see migration 0002).
PERIOD_HAS_DATA = """
SELECT EXISTS (SELECT 1 FROM interaction_bucket
               WHERE tenant_id = $1 AND dimension = 'action' AND period = $2 AND bucket_start = $3)
"""

# A bucket is the sum of its shards (one per commit lane of each worker process that wrote it).
PERIOD_PAGE = f"""
SELECT group_id, {_TYPE_SUMS}, sum(distinct_count)::int8 AS distinct_count,
       count(*) OVER () AS groups
FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = $2 AND period = $3 AND bucket_start = $4
GROUP BY group_id
ORDER BY total DESC, group_id
LIMIT $5 OFFSET $6
"""
PERIOD_COUNT = """
SELECT count(DISTINCT group_id) FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = $2 AND period = $3 AND bucket_start = $4
"""

# Weekly and monthly buckets and rolling windows: sums of daily buckets.
ROLLING_HAS_DATA = """
SELECT EXISTS (SELECT 1 FROM interaction_bucket
               WHERE tenant_id = $1 AND dimension = 'action' AND period = 'daily'
                 AND bucket_start BETWEEN $2 AND $3)
"""
ROLLING_PAGE = f"""
SELECT group_id, {_TYPE_SUMS}, 0::int8 AS distinct_count,
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
# Distinct items over several days cannot be summed from daily counts: a pair counts when it
# was seen on any day of the range ($3, $4: the first and last day's daily tags).
ROLLING_DISTINCT = f"""
SELECT group_id, count(*) AS n FROM distinct_seen
WHERE tenant_id = $1 AND dimension = $2 AND group_id = ANY($5::text[])
  AND EXISTS (SELECT 1 FROM unnest(tags) AS t
              WHERE t BETWEEN $3 AND $4 AND t % 4 = {TAG_CODES[Period.DAILY]})
GROUP BY group_id
"""

# Custom-type counts of a page's groups ($5: the groups that have some: total exceeds the
# sum of their system counters). A page without such groups costs no query.
PERIOD_OUTCOMES = """
SELECT group_id, type, sum(count)::int8 AS n FROM interaction_bucket_outcome
WHERE tenant_id = $1 AND dimension = $2 AND period = $3 AND bucket_start = $4
  AND group_id = ANY($5::text[])
GROUP BY 1, 2
"""
ROLLING_OUTCOMES = """
SELECT group_id, type, sum(count)::int8 AS n FROM interaction_bucket_outcome
WHERE tenant_id = $1 AND dimension = $2 AND period = 'daily' AND bucket_start BETWEEN $3 AND $4
  AND group_id = ANY($5::text[])
GROUP BY 1, 2
"""

# Raw history: the fallback when no bucket holds the period, so it aggregates millions of
# rows. Shapes measured with bench/fallback.py (10M rows, 2.5M in the month, 2 cores):
# - action, treatment: one hash aggregation over the range.
# - channel: count(DISTINCT treatment_id) sorted all rows of the range; pre-aggregating per
#   (channel, treatment) pair (5,000 pairs) hashes instead, and the pairs of a channel are its
#   distinct treatments (4.4 s -> 0.8 s).
# - customer: count(DISTINCT action_id) over 200,000 customers sorted every row of the range
#   (and spilled to disk); now one hash aggregation ranks the page and a second statement
#   counts the distinct actions of the page's customers only, as rolling_page does
#   (3.6 s -> 2.0 s on a loaded machine; the hash aggregation of 200,000 groups is most of it).
_HISTORY_RANGE = "tenant_id = $1 AND ts >= $2 AND ($3::timestamptz IS NULL OR ts < $3)"
_TYPE_COUNTS = ",\n       ".join(
    [*(f"count(*) FILTER (WHERE type = '{t}') AS {t}" for t in _TYPES), "count(*) AS total"]
)


def _history_plain_sql(column: str, extra: str) -> str:
    return f"""
SELECT {column} AS group_id,
       {_TYPE_COUNTS},
       0::int8 AS distinct_count,
       count(*) OVER () AS groups
FROM interaction_history
WHERE {_HISTORY_RANGE} {extra}
GROUP BY {column}
ORDER BY total DESC, group_id
LIMIT $4 OFFSET $5
"""


HISTORY_CHANNEL_PAGE = f"""
SELECT channel_id AS group_id, {_TYPE_SUMS},
       count(treatment_id) AS distinct_count,
       count(*) OVER () AS groups
FROM (SELECT channel_id, treatment_id,
             {_TYPE_COUNTS}
      FROM interaction_history
      WHERE {_HISTORY_RANGE} AND channel_id IS NOT NULL
      GROUP BY channel_id, treatment_id) AS pairs
GROUP BY channel_id
ORDER BY total DESC, group_id
LIMIT $4 OFFSET $5
"""

# Distinct actions of the page's customers only (the page itself is ranked without them).
HISTORY_CUSTOMER_ACTIONS = f"""
SELECT customer_id AS group_id, count(DISTINCT action_id) AS n
FROM interaction_history
WHERE {_HISTORY_RANGE} AND customer_id = ANY($4::text[])
GROUP BY customer_id
"""

HISTORY_PAGE = {
    GroupBy.ACTION: _history_plain_sql("action_id", ""),
    GroupBy.TREATMENT: _history_plain_sql("treatment_id", "AND treatment_id IS NOT NULL"),
    GroupBy.CHANNEL: HISTORY_CHANNEL_PAGE,
    GroupBy.CUSTOMER: _history_plain_sql("customer_id", ""),
}
_GROUP_FILTERS: dict[GroupBy, tuple[str, str]] = {
    GroupBy.ACTION: ("action_id", ""),
    GroupBy.TREATMENT: ("treatment_id", "AND treatment_id IS NOT NULL"),
    GroupBy.CHANNEL: ("channel_id", "AND channel_id IS NOT NULL"),
    GroupBy.CUSTOMER: ("customer_id", ""),
}
HISTORY_COUNT = {
    g: f"SELECT count(DISTINCT {column}) FROM interaction_history WHERE {_HISTORY_RANGE} {extra}"
    for g, (column, extra) in _GROUP_FILTERS.items()
}
HISTORY_OUTCOMES = {
    g: f"""
SELECT {DIMENSION_COLUMNS[g.value]} AS group_id, type, count(*) AS n FROM interaction_history
WHERE {_HISTORY_RANGE} AND type NOT IN ({_SYSTEM_LIST})
  AND {DIMENSION_COLUMNS[g.value]} = ANY($4::text[])
GROUP BY 1, 2
"""
    for g in GroupBy
}
# Per-transaction planner settings of the history queries. The history table is written in
# arrival order, so a range of ts is a narrow band of its pages: the index scan reads a
# quarter of the table where the default costs (random_page_cost 4, for spinning disks) chose
# to read all of it (0.8 s -> 0.5 s for a month of 10M rows). The hash tables of 200,000
# customers need more than the default 4 MB, or they spill to disk. A custom plan every time:
# a generic one cannot use the range's end ($3 may be NULL) to bound the index scan.
HISTORY_SETTINGS = (
    "SET LOCAL random_page_cost = 1.1; SET LOCAL work_mem = '64MB';"
    " SET LOCAL plan_cache_mode = force_custom_plan"
)

# The first day whose daily buckets and distinct tags retention keeps (NULL: every day).
ROLLING_KEPT_FROM = "SELECT greatest(buckets_from, distinct_from) FROM retention_horizon"

TIMESERIES_BUCKETS = f"""
SELECT bucket_start AS day, {_TYPE_SUMS}
FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = 'action' AND period = 'daily' AND bucket_start BETWEEN $2 AND $3
GROUP BY bucket_start
"""
TIMESERIES_HISTORY = f"""
SELECT (ts AT TIME ZONE 'UTC')::date AS day,
       {_TYPE_COUNTS}
FROM interaction_history
WHERE tenant_id = $1 AND ts >= $2 AND ts < $3
GROUP BY 1
"""


def _page(records: list[asyncpg.Record], total_groups: int) -> Page:
    groups = [
        GroupCounts(r["group_id"], *(r[c] for c in ROW_COUNTERS), r["distinct_count"])
        for r in records
    ]
    return Page(total_groups, groups)


def _with_custom_types(groups: list[GroupCounts]) -> list[str]:
    """Groups whose total holds events of types without a counter (custom outcome types)."""
    return [g.group_id for g in groups if g.of("total") > sum(g.counts[t] for t in SYSTEM_TYPES)]


async def _add_outcomes(conn: Connection, page: Page, sql: str, *args: object) -> Page:
    """The page with each group's custom-type counts (``sql`` takes ``args``, then the ids)."""
    ids = _with_custom_types(page.groups)
    if not ids:
        return page
    found: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(sql, *args, ids):
        found.setdefault(r["group_id"], {})[r["type"]] = r["n"]
    return Page(
        page.total_groups,
        [g.with_custom(found[g.group_id]) if g.group_id in found else g for g in page.groups],
    )


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
    days = days_of(period, start)
    if days is not None:
        return await rolling_page(pool, tenant, group_by, *days, limit, offset)
    # One snapshot for the page and its custom-type counts.
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        if not await conn.fetchval(PERIOD_HAS_DATA, tenant, period, start):
            return None
        args = (tenant, group_by.value, period.value, start)
        page = await _paged(conn, PERIOD_PAGE, PERIOD_COUNT, args, limit, offset)
        return await _add_outcomes(conn, page, PERIOD_OUTCOMES, *args)


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
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        if not await conn.fetchval(ROLLING_HAS_DATA, tenant, first, last):
            return None
        args = (tenant, group_by.value, first, last)
        page = await _paged(conn, ROLLING_PAGE, ROLLING_COUNT, args, limit, offset)
        page = await _add_outcomes(conn, page, ROLLING_OUTCOMES, *args)
        if group_by in (GroupBy.CUSTOMER, GroupBy.CHANNEL) and page.groups:
            ids = [g.group_id for g in page.groups]
            tags = (tag(Period.DAILY, first), tag(Period.DAILY, last))
            found = await conn.fetch(ROLLING_DISTINCT, tenant, group_by.value, *tags, ids)
            distinct = {r["group_id"]: r["n"] for r in found}
            page = Page(
                page.total_groups,
                [g.with_distinct(distinct.get(g.group_id, 0)) for g in page.groups],
            )
        return page


async def history_page(
    pool: asyncpg.Pool,
    tenant: str,
    group_by: GroupBy,
    start: datetime,
    end: datetime | None,
    limit: int,
    offset: int,
) -> Page:
    """The same page aggregated from raw history over ``[start, end)``.

    One snapshot (repeatable read) for the page and the distinct counts of its customers.
    """
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        await conn.execute(HISTORY_SETTINGS)
        args = (tenant, start, end)
        page = await _paged(
            conn, HISTORY_PAGE[group_by], HISTORY_COUNT[group_by], args, limit, offset
        )
        if group_by is GroupBy.CUSTOMER and page.groups:
            ids = [g.group_id for g in page.groups]
            found = await conn.fetch(HISTORY_CUSTOMER_ACTIONS, *args, ids)
            distinct = {r["group_id"]: r["n"] for r in found}
            page = Page(
                page.total_groups,
                [g.with_distinct(distinct.get(g.group_id, 0)) for g in page.groups],
            )
        return await _add_outcomes(conn, page, HISTORY_OUTCOMES[group_by], *args)


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


async def rolling_kept_from(pool: asyncpg.Pool) -> date | None:
    """The first day a rolling window may start on: retention dropped the days before it."""
    kept: date | None = await pool.fetchval(ROLLING_KEPT_FROM)
    return kept
