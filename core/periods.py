"""Pure UTC period bucketing: which daily, weekly, monthly and all-time bucket holds an instant.

No clock is read here; callers pass ``now`` in.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def period_for_days(days: int) -> Period:
    """The seed API's mapping of a ``days`` parameter to a period type."""
    if days <= 1:
        return Period.DAILY
    if days <= 7:
        return Period.WEEKLY
    if days <= 31:
        return Period.MONTHLY
    return Period.ALLTIME


@dataclass(frozen=True, slots=True)
class TimeRange:
    """What a summary covers: the bucket(s) to read and the equivalent event-time range.

    ``first_day``/``last_day`` are inclusive bucket starts; ``start``/``end`` are the
    half-open instant range ``[start, end)`` used to aggregate raw history (``end`` is None
    for all-time: no upper bound).
    """

    period: Period
    rolling: bool
    first_day: date
    last_day: date
    start: datetime
    end: datetime | None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def summary_range(days: int, rolling: bool, now: datetime) -> TimeRange:
    """The range a summary for ``days`` covers at ``now``.

    ``window=period``: the current calendar period of the mapped type.
    ``window=rolling``: exactly the last ``days`` UTC days including today, from daily buckets.
    """
    today = now.astimezone(UTC).date()
    if rolling:
        first = today - timedelta(days=days - 1) if days - 1 < (today - date.min).days else date.min
        tomorrow = next_bucket_start(Period.DAILY, today)
        end = _midnight(tomorrow) if tomorrow else None
        return TimeRange(Period.DAILY, True, first, today, _midnight(first), end)
    period = period_for_days(days)
    start = bucket_start(period, today)
    nxt = next_bucket_start(period, start)
    return TimeRange(period, False, start, start, _midnight(start), _midnight(nxt) if nxt else None)


# Redis keeps a bucket until a day after the bucket ends: long enough for late events and for
# readers of the just-finished period, short enough that the hot model stays small.
REDIS_GRACE = timedelta(days=1)


def redis_expiry(period: Period, start: date) -> datetime | None:
    """When Redis may forget the bucket starting at ``start``; None: keep forever (all-time,
    and the last buckets of the calendar, whose end plus grace is past 9999-12-31)."""
    nxt = next_bucket_start(period, start)
    if period is Period.ALLTIME or nxt is None or nxt > date.max - REDIS_GRACE:
        return None
    return _midnight(nxt) + REDIS_GRACE


def oldest_kept_starts(now: datetime) -> dict[Period, date]:
    """The earliest bucket start of each bounded period that Redis still keeps at ``now``.

    Bucket expiry grows with the start, so these bounds select exactly the buckets for which
    ``redis_expiry`` is in the future; statements take them as parameters.
    """
    today = now.astimezone(UTC).date()
    bounds = {}
    for period in (Period.DAILY, Period.WEEKLY, Period.MONTHLY):
        start = bucket_start(period, today)
        while start > date.min:
            earlier = bucket_start(period, start - timedelta(days=1))
            expires = redis_expiry(period, earlier)
            if expires is not None and expires <= now:
                break
            start = earlier
        bounds[period] = start
    return bounds
