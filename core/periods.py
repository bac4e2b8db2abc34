"""Pure UTC period bucketing: which daily, weekly, monthly and all-time bucket holds an instant.

No clock is read here; callers pass ``now`` in. What a summary request covers is
core/ranges.py; which buckets Redis keeps is core/hot.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache


class Period(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    ALLTIME = "alltime"


# The all-time bucket needs a start like every other bucket; the first representable day
# keeps it below every accepted timestamp.
ALLTIME_START = date(1, 1, 1)


def bucket_start(period: Period, day: date) -> date:
    """First day of the ``period`` bucket that contains ``day`` (weeks start on ISO Monday)."""
    if period is Period.DAILY:
        return day
    if period is Period.WEEKLY:
        return day - timedelta(days=day.weekday())
    if period is Period.MONTHLY:
        return day.replace(day=1)
    return ALLTIME_START


# Iterating the enum class is slow enough to show in the worker's profile; a tuple is not.
_PERIODS = tuple(Period)


def bucket_starts(ts: datetime) -> tuple[tuple[Period, date], ...]:
    """The four buckets (one per period type) that an event at ``ts`` increments."""
    return _day_buckets(ts.astimezone(UTC).date())


@lru_cache(maxsize=4096)
def _day_buckets(day: date) -> tuple[tuple[Period, date], ...]:
    # Events of a batch share few days: computing each day's buckets once is enough.
    return tuple((period, bucket_start(period, day)) for period in _PERIODS)


def next_bucket_start(period: Period, start: date) -> date | None:
    """First day after the bucket that begins at ``start``.

    None for the unbounded all-time, and for a bucket that runs to the end of the calendar
    (9999-12-31): its successor is not a representable date.
    """
    if period is Period.DAILY:
        return _days_after(start, 1)
    if period is Period.WEEKLY:
        return _days_after(start, 7)
    if period is Period.MONTHLY:
        if start.month == 12:
            return None if start.year == 9999 else date(start.year + 1, 1, 1)
        return date(start.year, start.month + 1, 1)
    return None


# The same bucketing in SQL, for statements that bucket inside Postgres (the write path, the
# rebuild): ``{day}`` is a ``date`` expression. tests/integration/test_sql_periods.py checks
# that Postgres and ``bucket_start`` agree. The all-time start is '-infinity' there: asyncpg
# reads and writes ``date.min`` (ALLTIME_START) as '-infinity'.
PERIOD_START_SQL: dict[Period, str] = {
    Period.DAILY: "{day}",
    Period.WEEKLY: "date_trunc('week', {day})::date",
    Period.MONTHLY: "date_trunc('month', {day})::date",
    Period.ALLTIME: "'-infinity'::date",
}

# ``next_bucket_start`` in SQL: ``{start}`` is a bucket's first day; NULL where Python has None.
PERIOD_END_SQL: dict[Period, str] = {
    Period.DAILY: "CASE WHEN {start} < DATE '9999-12-31' THEN {start} + 1 END",
    Period.WEEKLY: "CASE WHEN {start} <= DATE '9999-12-24' THEN {start} + 7 END",
    Period.MONTHLY: "CASE WHEN {start} < DATE '9999-12-01' THEN ({start} + interval '1 month')::date END",
    Period.ALLTIME: "NULL::date",
}

# The UTC day of a timestamptz expression ``{ts}``. asyncpg writes the first and last
# instants of the calendar (datetime.min, datetime.max) as -infinity and infinity.
UTC_DAY_SQL = (
    "CASE WHEN isfinite({ts}) THEN ({ts} AT TIME ZONE 'UTC')::date"
    " WHEN {ts} < 'epoch' THEN DATE '0001-01-01' ELSE DATE '9999-12-31' END"
)

# Postgres stores these periods; the others are sums of their daily buckets (see
# core/migrations/0002_write_path.sql).
STORED_PERIODS: tuple[Period, ...] = (Period.DAILY, Period.ALLTIME)


def days_of(period: Period, start: date) -> tuple[date, date] | None:
    """First and last day of a bucket that Postgres sums from daily buckets; None for the
    stored periods."""
    if period in STORED_PERIODS:
        return None
    nxt = next_bucket_start(period, start)
    return start, (nxt - timedelta(days=1)) if nxt else date.max


def _days_after(day: date, days: int) -> date | None:
    return day + timedelta(days=days) if (date.max - day).days >= days else None


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)
