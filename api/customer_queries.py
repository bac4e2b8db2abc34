"""Postgres reads of one customer's history (index interaction_history_customer, migration
0006). Kept beside api/queries.py rather than in it: they read no bucket, and the bucket
queries change with the counter schema while these do not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from api.customers import PERIOD_KEY_SQL, ROLLING
from core.periods import PERIOD_END_SQL, PERIOD_START_SQL, Period
from core.schema import Classification

_COLUMNS = "event_id, ts, action_id, treatment_id, channel_id, type, direction"
_FILTERS = """
tenant_id = $1 AND customer_id = $2
  AND ($3::text IS NULL OR action_id = $3)
  AND ($4::text IS NULL OR treatment_id = $4)
  AND ($5::text IS NULL OR channel_id = $5)
"""


def _iso_sql(ts: str) -> str:
    """``api.customers.iso`` in SQL: ISO-8601 UTC with ``Z``, microseconds only when not 0."""
    utc = f"({ts} AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        f" || CASE to_char({utc}, 'US') WHEN '000000' THEN '' ELSE '.' || to_char({utc}, 'US') END"
        " || 'Z'"
    )


def _by_period(sql: Mapping[Period, str], rolling: str, **names: str) -> str:
    whens = " ".join(f"WHEN '{p.value}' THEN {sql[p].format(**names)}" for p in Period)
    return f"CASE period {whens} ELSE {rolling} END"


# The customer's summary page as the response body, built by Postgres: the rows are a few
# hundred aggregates of the customer's history rows (read through the per-customer index),
# and building them in Python was most of a request's CPU on the API's one core (py-spy,
# bench.customer_reads). The rows follow api.models.CustomerSummary; the order and every
# value are those of tests/recount.py's expected_customer_summaries (test_customer_sql.py).
# $6/$7: [start, end) of a rolling window, else NULL. $8: the period types wanted, in API
# order (['rolling'] for a window); $9: the window's days. $10/$11: the types the tenant
# calls positive / negative. $12: rows in the page.
SUMMARY_PAGE = f"""
WITH e AS (
  SELECT ts, event_id COLLATE "C" AS event_id, action_id, treatment_id, channel_id, type,
         (ts AT TIME ZONE 'UTC')::date AS day
  FROM interaction_history
  WHERE {_FILTERS}
    AND ($6::timestamptz IS NULL OR ts >= $6) AND ($7::timestamptz IS NULL OR ts < $7)
), b AS (
  SELECT p.ord, p.period, {_by_period(PERIOD_START_SQL, "NULL::date", day="e.day")} AS start, e.*
  FROM e CROSS JOIN unnest($8::text[]) WITH ORDINALITY AS p(period, ord)
), g AS (
  SELECT ord, period, start, action_id, treatment_id, channel_id,
         count(*) FILTER (WHERE type = 'impression') AS impressions,
         count(*) FILTER (WHERE type = ANY($10::text[])) AS positive,
         count(*) FILTER (WHERE type = ANY($11::text[])) AS negative,
         count(*) FILTER (WHERE type = 'convert') AS converts,
         count(*) AS total,
         (array_agg(ts ORDER BY ts DESC, event_id DESC))[1] AS last_ts,
         (array_agg(type ORDER BY ts DESC, event_id DESC))[1] AS last_type
  FROM b GROUP BY ord, period, start, action_id, treatment_id, channel_id
), page AS (
  SELECT row_number() OVER (
           ORDER BY ord, start DESC, action_id, treatment_id NULLS FIRST, channel_id NULLS FIRST
         ) AS n, *
  FROM g ORDER BY n LIMIT $12
), shown AS (
  SELECT n, row_to_json(x)::text AS body FROM page CROSS JOIN LATERAL (
    SELECT $2::text AS "customerId", action_id AS "offerId", treatment_id AS "treatmentId",
      treatment_id AS "creativeId", channel_id AS "channelId", period AS "periodType",
      {_by_period(PERIOD_KEY_SQL, "'P' || $9::int || 'D'", start="start")} AS "periodKey",
      CASE WHEN period = '{Period.ALLTIME.value}' THEN NULL WHEN period = '{ROLLING}'
        THEN {_iso_sql("$6::timestamptz")} ELSE to_char(start, 'YYYY-MM-DD') || 'T00:00:00Z'
      END AS "start",
      CASE WHEN period = '{ROLLING}' THEN {_iso_sql("$7::timestamptz")}
        ELSE to_char({_by_period(PERIOD_END_SQL, "NULL::date", start="start")}, 'YYYY-MM-DD')
          || 'T00:00:00Z'
      END AS "end",
      impressions, positive, negative, greatest(impressions - positive - negative, 0) AS neutral,
      converts, total, {_iso_sql("last_ts")} AS "lastContactAt", last_type AS "lastOutcomeKey"
  ) x
)
SELECT '{{"data":[' || coalesce((SELECT string_agg(body, ',' ORDER BY n) FROM shown), '') || '],"total":' || (SELECT count(*) FROM g) || '}}'
"""


@dataclass(frozen=True, slots=True)
class Rows:
    """Whose history rows a read covers: $1-$5 of both statements."""

    tenant: str
    customer: str
    action: str | None = None
    treatment: str | None = None
    channel: str | None = None

    def args(self) -> tuple[str | None, ...]:
        return (self.tenant, self.customer, self.action, self.treatment, self.channel)


async def summary_page(
    pool: asyncpg.Pool,
    rows: Rows,
    periods: Sequence[Period] | None,
    rolling: tuple[int, datetime, datetime] | None,
    limit: int,
    classes: Mapping[str, Classification],
) -> str:
    """The JSON body ``{"data": [rows], "total": n}`` of one customer's summaries: the first
    ``limit`` rows of ``periods`` (API order), or of the window ``rolling`` (days, start, end)."""
    days, since, until = rolling if rolling is not None else (None, None, None)
    wanted = [ROLLING] if rolling is not None else [p.value for p in Period if p in (periods or ())]
    positive = [k for k, c in classes.items() if c is Classification.POSITIVE]
    negative = [k for k, c in classes.items() if c is Classification.NEGATIVE]
    body: str = await pool.fetchval(
        SUMMARY_PAGE, *rows.args(), since, until, wanted, days, positive, negative, limit
    )
    return body


# A page of history newest first as JSON rows (api.models.HistoryEvent), after the cursor
# ($7, $8) when given: $9 rows, whether there are more, and the last row's (ts, event_id) for
# the next cursor. Built by Postgres, like the summaries: Python rows were a fifth of the
# request (py-spy).
HISTORY_PAGE = f"""
WITH page AS (
  SELECT row_number() OVER (ORDER BY ts DESC, event_id DESC) AS n, *
  FROM (
    SELECT event_id, ts, action_id, treatment_id, channel_id, type, direction
    FROM interaction_history
    WHERE {_FILTERS} AND ($6::text IS NULL OR type = $6)
      AND ($7::timestamptz IS NULL OR (ts, event_id) < ($7, $8))
    ORDER BY ts DESC, event_id DESC
    LIMIT $9 + 1
  ) newest
)
SELECT
  coalesce((SELECT string_agg(row_to_json(x)::text, ',' ORDER BY n) FROM page CROSS JOIN LATERAL (
    SELECT event_id AS id, {_iso_sql("ts")} AS "timestamp", $2::text AS "customerId",
      action_id AS "actionId", action_id AS "offerId", treatment_id AS "treatmentId",
      treatment_id AS "creativeId", channel_id AS "channelId", type, direction
  ) x WHERE n <= $9), '') AS rows,
  (SELECT count(*) FROM page) > $9 AS more,
  (SELECT ts FROM page WHERE n = $9) AS last_ts,
  (SELECT event_id FROM page WHERE n = $9) AS last_id
"""


async def history_page(
    pool: asyncpg.Pool,
    rows: Rows,
    type_: str | None,
    after: tuple[datetime, str] | None,
    size: int,
) -> tuple[str, tuple[datetime, str] | None]:
    """The page's ``size`` rows as JSON (comma-separated objects), and the position after its
    last row when there are more (None on the last page)."""
    ts, event_id = after if after else (None, None)
    found = await pool.fetchrow(HISTORY_PAGE, *rows.args(), type_, ts, event_id, size)
    assert found is not None  # an aggregate: always one row
    return found["rows"], (found["last_ts"], found["last_id"]) if found["more"] else None
