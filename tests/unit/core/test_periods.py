"""Period bucketing (docs/contract.md section 2) and the range a summary covers (section 3)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.hot import REDIS_GRACE, redis_expiry
from core.periods import ALLTIME_START, Period, bucket_start, bucket_starts, next_bucket_start
from core.ranges import period_for_days, summary_range

D, W, M, A = Period.DAILY, Period.WEEKLY, Period.MONTHLY, Period.ALLTIME
PROPERTY = settings(max_examples=300, deadline=None)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def at(offset_hours: float, y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=timezone(timedelta(hours=offset_hours)))


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# ---------------------------------------------------------------- bucket_starts: tables


@pytest.mark.parametrize(
    ("ts", "daily", "weekly", "monthly"),
    [
        # last instant of an ISO week (Sunday 23:59:59.999) stays in that week
        (
            utc(2026, 3, 1, 23, 59, 59, 999000),
            date(2026, 3, 1),
            date(2026, 2, 23),
            date(2026, 3, 1),
        ),
        # the next millisecond (Monday 00:00) opens a new week
        (utc(2026, 3, 2), date(2026, 3, 2), date(2026, 3, 2), date(2026, 3, 1)),
        # ISO week 53 of 2026 starts Monday 28 December
        (utc(2026, 12, 31, 12), date(2026, 12, 31), date(2026, 12, 28), date(2026, 12, 1)),
        # ...and its Sunday lies in 2027: the week keeps its 2026 start, the month is January
        (
            utc(2027, 1, 3, 23, 59, 59, 999999),
            date(2027, 1, 3),
            date(2026, 12, 28),
            date(2027, 1, 1),
        ),
        # first Monday after week 53
        (utc(2027, 1, 4), date(2027, 1, 4), date(2027, 1, 4), date(2027, 1, 1)),
        # New Year's Day 2026 is a Thursday: ISO week 1 of 2026 began on 2025-12-29
        (utc(2026, 1, 1), date(2026, 1, 1), date(2025, 12, 29), date(2026, 1, 1)),
        # last instant of a year
        (
            utc(2025, 12, 31, 23, 59, 59, 999999),
            date(2025, 12, 31),
            date(2025, 12, 29),
            date(2025, 12, 1),
        ),
        # month end: Jan 31 (a Saturday)
        (
            utc(2026, 1, 31, 23, 59, 59, 999999),
            date(2026, 1, 31),
            date(2026, 1, 26),
            date(2026, 1, 1),
        ),
        # Feb 1 (a Sunday) is a new month but the same week as Jan 31
        (utc(2026, 2, 1), date(2026, 2, 1), date(2026, 1, 26), date(2026, 2, 1)),
        # Feb 28 in a non-leap year is the last day of February
        (utc(2026, 2, 28, 23, 59, 59), date(2026, 2, 28), date(2026, 2, 23), date(2026, 2, 1)),
        # Feb 29 in a leap year (2024)
        (utc(2024, 2, 29, 12), date(2024, 2, 29), date(2024, 2, 26), date(2024, 2, 1)),
        # 1900 is not a leap year (divisible by 100, not by 400): Feb 28 is followed by Mar 1
        (utc(1900, 2, 28, 23, 59, 59), date(1900, 2, 28), date(1900, 2, 26), date(1900, 2, 1)),
        (utc(1900, 3, 1), date(1900, 3, 1), date(1900, 2, 26), date(1900, 3, 1)),
        # 2000 is a leap year (divisible by 400)
        (utc(2000, 2, 29), date(2000, 2, 29), date(2000, 2, 28), date(2000, 2, 1)),
        # an offset moves the event to the UTC day: 00:30+01:00 on Jan 1 is Dec 31 23:30 UTC
        (at(1, 2026, 1, 1, 0, 30), date(2025, 12, 31), date(2025, 12, 29), date(2025, 12, 1)),
        # ...and a negative offset can push it into the next year
        (at(-1, 2025, 12, 31, 23, 30), date(2026, 1, 1), date(2025, 12, 29), date(2026, 1, 1)),
        # +14:00 (Line Islands) on a Monday afternoon is still Sunday in UTC
        (at(14, 2026, 3, 2, 13, 59), date(2026, 3, 1), date(2026, 2, 23), date(2026, 3, 1)),
        # the first representable instant: 0001-01-01 is a Monday
        (utc(1, 1, 1), date(1, 1, 1), date(1, 1, 1), date(1, 1, 1)),
        # the last representable instant: 9999-12-31 is a Friday
        (
            utc(9999, 12, 31, 23, 59, 59, 999999),
            date(9999, 12, 31),
            date(9999, 12, 27),
            date(9999, 12, 1),
        ),
    ],
)
def test_event_lands_in_the_utc_calendar_buckets_containing_it(
    ts: datetime, daily: date, weekly: date, monthly: date
) -> None:
    assert bucket_starts(ts) == ((D, daily), (W, weekly), (M, monthly), (A, ALLTIME_START))


# ---------------------------------------------------------------- next_bucket_start: table


@pytest.mark.parametrize(
    ("period", "start", "expected"),
    [
        # Feb 28 of a non-leap year is followed by Mar 1
        (D, date(2026, 2, 28), date(2026, 3, 1)),
        # ...of a leap year by Feb 29
        (D, date(2024, 2, 28), date(2024, 2, 29)),
        # a day bucket across a year end
        (D, date(2025, 12, 31), date(2026, 1, 1)),
        # the first day of the calendar
        (D, date(1, 1, 1), date(1, 1, 2)),
        # the last day runs to the end of the calendar: no next bucket
        (D, date(9999, 12, 31), None),
        # ISO week 53 of 2026 ends in 2027
        (W, date(2026, 12, 28), date(2027, 1, 4)),
        # the last week (Mon 9999-12-27) would end in year 10000: no next bucket
        (W, date(9999, 12, 27), None),
        # a 31-day month
        (M, date(2026, 1, 1), date(2026, 2, 1)),
        # February of 1900 (not leap)
        (M, date(1900, 2, 1), date(1900, 3, 1)),
        # December rolls over to January
        (M, date(2026, 12, 1), date(2027, 1, 1)),
        # December 9999: no next month
        (M, date(9999, 12, 1), None),
        # all-time never ends
        (A, ALLTIME_START, None),
    ],
)
def test_next_bucket_start(period: Period, start: date, expected: date | None) -> None:
    assert next_bucket_start(period, start) == expected


# ---------------------------------------------------------------- period_for_days: table


@pytest.mark.parametrize(
    ("days", "period"),
    [
        (1, D),  # one day: today
        (2, W),  # first value of the weekly band
        (7, W),  # last value of the weekly band
        (8, M),  # first value of the monthly band
        (31, M),  # last value of the monthly band
        (32, A),  # first value of the all-time band
        (36500, A),  # the largest accepted value
    ],
)
def test_days_map_to_the_seed_v2_period_types(days: int, period: Period) -> None:
    assert period_for_days(days) is period


# ---------------------------------------------------------------- summary_range: tables

SUNDAY_NIGHT = utc(2026, 3, 1, 23, 59, 59)


@pytest.mark.parametrize(
    ("days", "now", "period", "first", "end"),
    [
        # days=1: today, midnight to midnight
        (1, SUNDAY_NIGHT, D, date(2026, 3, 1), utc(2026, 3, 2)),
        # days=7 on a Sunday night: the ISO week that began on Monday
        (7, SUNDAY_NIGHT, W, date(2026, 2, 23), utc(2026, 3, 2)),
        # days=31: the calendar month
        (31, SUNDAY_NIGHT, M, date(2026, 3, 1), utc(2026, 4, 1)),
        # days=36500: all time, no upper bound
        (36500, SUNDAY_NIGHT, A, ALLTIME_START, None),
        # "now" with an offset is taken in UTC: still December 2025
        (31, at(1, 2026, 1, 1, 0, 30), M, date(2025, 12, 1), utc(2026, 1, 1)),
        # leap February
        (8, utc(2024, 2, 29, 12), M, date(2024, 2, 1), utc(2024, 3, 1)),
        # the last day of the calendar has no "tomorrow": the range is open-ended
        (1, utc(9999, 12, 31, 12), D, date(9999, 12, 31), None),
        # ...nor has the last week
        (7, utc(9999, 12, 31, 12), W, date(9999, 12, 27), None),
        # the first day of the calendar
        (1, utc(1, 1, 1), D, date(1, 1, 1), utc(1, 1, 2)),
    ],
)
def test_period_window_covers_the_current_period(
    days: int, now: datetime, period: Period, first: date, end: datetime | None
) -> None:
    r = summary_range(days, rolling=False, now=now)
    assert (r.period, r.rolling, r.first_day, r.last_day) == (period, False, first, first)
    assert (r.start, r.end) == (midnight(first), end)


@pytest.mark.parametrize(
    ("days", "now", "first", "end"),
    [
        # one day: today only
        (1, utc(2026, 3, 1, 10), date(2026, 3, 1), utc(2026, 3, 2)),
        # seven days including today
        (7, utc(2026, 3, 1, 10), date(2026, 2, 23), utc(2026, 3, 2)),
        # 30 days back from Mar 1 in a non-leap year reach Jan 31
        (30, utc(2026, 3, 1), date(2026, 1, 31), utc(2026, 3, 2)),
        # ...in a leap year only Feb 1
        (30, utc(2024, 3, 1), date(2024, 2, 1), utc(2024, 3, 2)),
        # the largest days value: 36500 days including today
        (36500, utc(2026, 3, 1), date(1926, 3, 27), utc(2026, 3, 2)),
        # an offset "now" is taken in UTC
        (1, at(1, 2026, 1, 1, 0, 30), date(2025, 12, 31), utc(2026, 1, 1)),
        # near year 1 the range is clamped to the first day of the calendar
        (36500, utc(1, 1, 5), date(1, 1, 1), utc(1, 1, 6)),
        # on the last day of the calendar the range has no upper instant
        (2, utc(9999, 12, 31, 23), date(9999, 12, 30), None),
    ],
)
def test_rolling_window_covers_the_last_days_including_today(
    days: int, now: datetime, first: date, end: datetime | None
) -> None:
    r = summary_range(days, rolling=True, now=now)
    today = now.astimezone(UTC).date()
    assert (r.period, r.rolling, r.first_day, r.last_day) == (D, True, first, today)
    assert (r.start, r.end) == (midnight(first), end)


# ---------------------------------------------------------------- redis_expiry: table


@pytest.mark.parametrize(
    ("period", "start", "expected"),
    [
        # a day bucket lives until a day after it ends
        (D, date(2026, 3, 1), utc(2026, 3, 3)),
        # week 53 ends 2027-01-04, kept one more day
        (W, date(2026, 12, 28), utc(2027, 1, 5)),
        # leap February ends Mar 1
        (M, date(2024, 2, 1), utc(2024, 3, 2)),
        # December's grace runs into January
        (M, date(2026, 12, 1), utc(2027, 1, 2)),
        # all-time is kept forever
        (A, ALLTIME_START, None),
        # a day ending on 9999-12-31 would expire in year 10000: kept forever instead
        (D, date(9999, 12, 30), None),
        # the day before it still fits
        (D, date(9999, 12, 29), utc(9999, 12, 31)),
        # the last month has no end at all
        (M, date(9999, 12, 1), None),
    ],
)
def test_redis_keeps_a_bucket_one_day_past_its_end(
    period: Period, start: date, expected: datetime | None
) -> None:
    assert redis_expiry(period, start) == expected


# ---------------------------------------------------------------- invariants

periods = st.sampled_from(list(Period))
any_day = st.dates()
utc_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)
# Years 2..9998 keep local wall-clock times convertible to UTC whatever the offset.
aware_instants = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    utc_offsets,
)


@PROPERTY
@given(periods, any_day)
@example(D, date.max)  # the ends of the calendar, which random dates rarely hit
@example(W, date.max)
@example(M, date.max)
@example(W, date.min)
def test_every_day_lies_in_its_bucket(period: Period, day: date) -> None:
    start = bucket_start(period, day)
    nxt = next_bucket_start(period, start)
    assert start <= day
    assert nxt is None or day < nxt
    # the bucket's start is its own start, and buckets tile the calendar without gaps
    assert bucket_start(period, start) == start
    if nxt is not None:
        assert bucket_start(period, nxt) == nxt
        assert bucket_start(period, nxt - timedelta(days=1)) == start


@PROPERTY
@given(any_day)
def test_weekly_bucket_starts_on_the_monday_of_the_iso_week(day: date) -> None:
    start = bucket_start(W, day)
    assert start.isoweekday() == 1
    assert 0 <= (day - start).days < 7
    assert start.isocalendar()[:2] == day.isocalendar()[:2]


@PROPERTY
@given(any_day)
def test_monthly_bucket_starts_on_day_one_of_the_same_month(day: date) -> None:
    start = bucket_start(M, day)
    assert (start.year, start.month, start.day) == (day.year, day.month, 1)


@PROPERTY
@given(aware_instants)
def test_bucket_starts_follow_the_utc_day_of_the_instant(ts: datetime) -> None:
    utc_day = ts.astimezone(UTC).date()
    starts = dict(bucket_starts(ts))
    assert list(starts) == list(Period)
    assert starts == {p: bucket_start(p, utc_day) for p in Period}
    # the event's instant is inside the daily bucket's half-open range
    assert midnight(starts[D]) <= ts < midnight(starts[D]) + timedelta(days=1)


@PROPERTY
@given(st.integers(1, 36500), aware_instants)
def test_rolling_range_has_exactly_days_days_and_ends_today(days: int, now: datetime) -> None:
    r = summary_range(days, rolling=True, now=now)
    today = now.astimezone(UTC).date()
    assert r.last_day == today
    available = (today - date.min).days + 1
    assert (r.last_day - r.first_day).days + 1 == min(days, available)
    assert r.start == midnight(r.first_day)
    assert r.end == midnight(today) + timedelta(days=1)
    assert r.start <= now < r.end


@PROPERTY
@given(st.integers(1, 36500), aware_instants)
def test_period_range_is_the_current_bucket_and_contains_now(days: int, now: datetime) -> None:
    r = summary_range(days, rolling=False, now=now)
    today = now.astimezone(UTC).date()
    assert r.period is period_for_days(days)
    assert r.first_day == r.last_day == bucket_start(r.period, today)
    assert r.start <= now
    assert r.end is None if r.period is A else r.end is not None and now < r.end


@PROPERTY
@given(periods, any_day)
@example(D, date.max)
@example(D, date.max - timedelta(days=1))
@example(W, date.max)
def test_redis_expiry_is_after_the_bucket_ends(period: Period, day: date) -> None:
    start = bucket_start(period, day)
    expires = redis_expiry(period, start)
    nxt = next_bucket_start(period, start)
    if expires is None:
        # only buckets without a representable end-plus-grace are kept forever
        assert period is A or nxt is None or nxt > date.max - REDIS_GRACE
    else:
        assert nxt is not None
        assert expires == midnight(nxt) + REDIS_GRACE
