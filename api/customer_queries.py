"""Postgres reads of one customer's history (index interaction_history_customer, migration
0006). Kept beside api/queries.py rather than in it: they read no bucket, and the bucket
queries change with the counter schema while these do not."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from api.customers import CustomerEvent

_COLUMNS = "event_id, ts, action_id, treatment_id, channel_id, type, direction"
_FILTERS = """
tenant_id = $1 AND customer_id = $2
  AND ($3::text IS NULL OR action_id = $3)
  AND ($4::text IS NULL OR treatment_id = $4)
  AND ($5::text IS NULL OR channel_id = $5)
"""
# Every event of the customer (or those since $6) matching the filters.
CUSTOMER_EVENTS = f"""
SELECT {_COLUMNS} FROM interaction_history
WHERE {_FILTERS} AND ($6::timestamptz IS NULL OR ts >= $6)
"""
# A page of history newest first, after the cursor ($7, $8) when given; $9 rows.
HISTORY_PAGE = f"""
SELECT {_COLUMNS} FROM interaction_history
WHERE {_FILTERS} AND ($6::text IS NULL OR type = $6)
  AND ($7::timestamptz IS NULL OR (ts, event_id) < ($7, $8))
ORDER BY ts DESC, event_id DESC
LIMIT $9
"""


def _events(records: list[asyncpg.Record]) -> list[CustomerEvent]:
    return [CustomerEvent(*r) for r in records]


async def customer_events(
    pool: asyncpg.Pool,
    tenant: str,
    customer: str,
    action: str | None,
    treatment: str | None,
    channel: str | None,
    since: datetime | None,
) -> list[CustomerEvent]:
    records = await pool.fetch(CUSTOMER_EVENTS, tenant, customer, action, treatment, channel, since)
    return _events(records)


async def history_page(
    pool: asyncpg.Pool,
    tenant: str,
    customer: str,
    action: str | None,
    treatment: str | None,
    channel: str | None,
    type_: str | None,
    after: tuple[datetime, str] | None,
    rows: int,
) -> list[CustomerEvent]:
    ts, event_id = after if after else (None, None)
    records = await pool.fetch(
        HISTORY_PAGE, tenant, customer, action, treatment, channel, type_, ts, event_id, rows
    )
    return _events(records)
