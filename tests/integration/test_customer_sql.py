"""The summaries page Postgres builds (api.customer_queries.SUMMARY_PAGE) against the naive
recount of tests/recount.py, on a real Postgres: every row, value, order and page size."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.customer_queries import Rows, summary_page
from api.customers import PERIOD_KEY_SQL, period_key, rolling_start
from core.config import Settings
from core.periods import PERIOD_END_SQL, Period, next_bucket_start
from core.schema import SYSTEM_CLASSES, Classification
from tests.recount import Event, expected_customer_summaries

pytestmark = pytest.mark.integration

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Sunday of ISO week 53 of 2026, in January 2027: weeks, months and ISO years all cross.
NOW = datetime(2027, 1, 3, 12, 0, tzinfo=UTC)
INSERT = """
INSERT INTO interaction_history
    (tenant_id, event_id, ts, customer_id, action_id, treatment_id, channel_id, type)
VALUES ('t', $1, $2, 'C1', $3, $4, $5, $6)
"""

events_strategy = st.lists(
    st.builds(
        lambda i, seconds, micros, action, treatment, channel, kind: Event(
            f"e{i}",
            "t",
            NOW - timedelta(seconds=seconds, microseconds=micros),
            "C1",
            action,
            treatment,
            channel,
            kind,
        ),
        st.integers(0, 10_000),
        st.integers(0, 90 * 86_400).map(lambda s: s - s % 7),  # ties in time now and then
        st.sampled_from([0, 1, 500_000, 999_999]),  # no fraction: no '.000000' either
        st.sampled_from(["a1", "a2", "a3"]),
        st.sampled_from([None, "t1", "t2"]),
        st.sampled_from([None, "web", "email"]),
        st.sampled_from(["impression", "click", "dismiss", "accept", "convert", "hover"]),
    ),
    max_size=60,
    unique_by=lambda e: e.id,
)


async def _page(
    dsn: str,
    events: list[Event],
    periods: list[Period] | None,
    rolling: tuple[int, datetime, datetime] | None = None,
    limit: int = 10_000,
    classes: dict[str, Classification] | None = None,
    **filters: str,
) -> dict[str, object]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        await pool.execute("DELETE FROM interaction_history")
        await pool.executemany(
            INSERT, [(e.id, e.ts, e.action, e.treatment, e.channel, e.type) for e in events]
        )
        rows = Rows(
            "t", "C1", filters.get("offer"), filters.get("treatment"), filters.get("channel")
        )
        body = await summary_page(pool, rows, periods, rolling, limit, classes or SYSTEM_CLASSES)
    finally:
        await pool.close()
    parsed: dict[str, object] = orjson.loads(body)
    return parsed


@pytest.fixture
def dsn(settings: Settings) -> str:
    return settings.database_url


@PROPERTY
@given(events_strategy, st.sets(st.sampled_from(list(Period)), min_size=1), st.integers(1, 300))
def test_rows_equal_a_naive_recount(
    dsn: str, events: list[Event], periods: set[Period], limit: int
) -> None:
    want = expected_customer_summaries(events, "t", "C1", tuple(p.value for p in periods))
    got = asyncio.run(_page(dsn, events, list(periods), limit=limit))
    assert got == {"data": want[:limit], "total": len(want)}


@PROPERTY
@given(events_strategy, st.integers(1, 100))
def test_rolling_rows_equal_a_naive_recount(dsn: str, events: list[Event], days: int) -> None:
    want = expected_customer_summaries(events, "t", "C1", days=days, now=NOW)
    got = asyncio.run(_page(dsn, events, None, (days, *rolling_start(days, NOW))))
    assert got == {"data": want, "total": len(want)}


def test_filters_keep_only_their_rows(dsn: str) -> None:
    at = NOW - timedelta(hours=1)
    events = [
        Event("a", "t", at, "C1", "a1", "t1", "web", "click"),
        Event("b", "t", at, "C1", "a1", "t2", "email", "dismiss"),
        Event("c", "t", at, "C1", "a2", "t1", "web", "impression"),
    ]
    for filters in ({"offer": "a1"}, {"treatment": "t1"}, {"channel": "web"}):
        kept = [
            e
            for e in events
            if e.action == filters.get("offer", e.action)
            and e.treatment == filters.get("treatment", e.treatment)
            and e.channel == filters.get("channel", e.channel)
        ]
        want = expected_customer_summaries(kept, "t", "C1")
        got = asyncio.run(_page(dsn, events, list(Period), **filters))
        assert got == {"data": want, "total": len(want)}, filters


def test_last_contact_is_the_latest_event_ties_by_greatest_id(dsn: str) -> None:
    at = NOW - timedelta(hours=1)
    events = [
        Event("b", "t", at, "C1", "a1", None, "web", "click"),
        Event("a", "t", at, "C1", "a1", None, "web", "dismiss"),
        Event("c", "t", at - timedelta(minutes=1), "C1", "a1", None, "web", "convert"),
    ]
    [row] = asyncio.run(_page(dsn, events, [Period.ALLTIME]))["data"]  # type: ignore[misc]
    assert (row["lastContactAt"], row["lastOutcomeKey"]) == ("2027-01-03T11:00:00Z", "click")
    assert (row["positive"], row["negative"], row["converts"], row["total"]) == (1, 1, 1, 3)


def test_the_tenants_classes_decide_positive_and_negative(dsn: str) -> None:
    at = NOW - timedelta(hours=1)
    events = [
        Event("a", "t", at, "C1", "a1", None, None, "impression"),
        Event("b", "t", at, "C1", "a1", None, None, "impression"),
        Event("c", "t", at, "C1", "a1", None, None, "applied"),
        Event("d", "t", at, "C1", "a1", None, None, "hover"),
    ]
    classes = {**SYSTEM_CLASSES, "applied": Classification.POSITIVE}
    [row] = asyncio.run(_page(dsn, events, [Period.ALLTIME], classes=classes))["data"]  # type: ignore[misc]
    # hover is not registered: neutral; neutral = impressions - positive - negative
    assert (row["positive"], row["negative"], row["neutral"], row["total"]) == (1, 0, 1, 4)


@pytest.mark.parametrize(
    ("period", "start"),
    [
        (Period.DAILY, date(2026, 12, 1)),
        (Period.DAILY, date(9999, 12, 31)),  # no next day: no end
        (Period.WEEKLY, date(2024, 12, 30)),  # ISO year differs from the calendar's
        (Period.WEEKLY, date(2026, 12, 28)),  # a 53-week ISO year
        (Period.WEEKLY, date(9999, 12, 27)),
        (Period.MONTHLY, date(2026, 12, 1)),
        (Period.MONTHLY, date(9999, 12, 1)),
        (Period.ALLTIME, date(1, 1, 1)),
    ],
)
async def test_period_keys_and_ends_in_sql_equal_pythons(
    pool: asyncpg.Pool, period: Period, start: date
) -> None:
    # As text: asyncpg would send date.max as 'infinity'.
    day = "$1::text::date"
    key_sql, end_sql = (sql[period].format(start=day) for sql in (PERIOD_KEY_SQL, PERIOD_END_SQL))
    key, end, _ = await pool.fetchrow(f"SELECT {key_sql}, {end_sql}, {day}", start.isoformat())
    assert key == period_key(period, start)
    assert end == (next_bucket_start(period, start) if period is not Period.ALLTIME else None)
