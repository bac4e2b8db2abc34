"""core/retention.py: which partitions, tags and horizons a retention run leaves, by tables
with a comment per edge row and by hypothesis invariants against naive calendar arithmetic."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.distinct import TAG_CODES, tag
from core.periods import Period
from core.retention import (
    Horizons,
    Partition,
    advance,
    cutoff_day,
    kept_tags_from,
    months_to_create,
    partitions_to_drop,
)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


LEGACY = Partition("interaction_history_legacy", None, _utc(2026, 12, 1))
DEFAULT = Partition("interaction_history_default", None, None)


def _month(y: int, m: int) -> Partition:
    nxt = _utc(y + m // 12, m % 12 + 1, 1)
    return Partition(f"interaction_history_p{y}{m:02d}", _utc(y, m, 1), nxt)


PARTITIONS = [LEGACY, _month(2026, 12), _month(2027, 1), _month(2027, 2), DEFAULT]


@pytest.mark.parametrize(
    ("cutoff", "dropped"),
    [
        (None, []),  # retention 0: keep everything
        (date(2026, 11, 30), []),  # the legacy partition still holds the cutoff's day
        (date(2026, 12, 1), ["interaction_history_legacy"]),  # ends exactly at the cutoff
        (date(2027, 1, 31), ["interaction_history_legacy", "interaction_history_p202612"]),
        # far past everything: every range partition, never the default one
        (
            date(2030, 1, 1),
            [
                "interaction_history_legacy",
                "interaction_history_p202612",
                "interaction_history_p202701",
                "interaction_history_p202702",
            ],
        ),
    ],
)
def test_partitions_wholly_before_the_cutoff_are_dropped(
    cutoff: date | None, dropped: list[str]
) -> None:
    assert [p.name for p in partitions_to_drop(PARTITIONS, cutoff)] == dropped


@pytest.mark.parametrize(
    ("now", "months"),
    [
        # the partitions reach 2027-03-01; they must reach the month two after now's
        (_utc(2027, 1, 15), [date(2027, 3, 1)]),
        (_utc(2026, 12, 31, 23, 59), []),  # up to February 2027: there already
        (_utc(2027, 3, 1), [date(2027, 3, 1), date(2027, 4, 1), date(2027, 5, 1)]),
        # November: the months run into the next year
        (_utc(2027, 11, 2), [date(2027, m, 1) for m in range(3, 13)] + [date(2028, 1, 1)]),
    ],
)
def test_months_are_created_ahead_from_the_newest_partition(
    now: datetime, months: list[date]
) -> None:
    assert months_to_create(PARTITIONS, now) == months


@given(st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_months_to_create_are_contiguous_firsts_from_the_last_end(now: datetime) -> None:
    last = LEGACY.until
    assert last is not None
    months = months_to_create([LEGACY, DEFAULT], now)
    index = now.year * 12 + now.month - 1 + 2  # two months after now's month
    target = date(index // 12, index % 12 + 1, 1)
    if target < last.date():
        assert months == []
    else:
        assert months[0] == last.date() and months[-1] == target
    for a, b in itertools.pairwise(months):
        assert a.day == b.day == 1 and 28 <= (b - a).days <= 31


def _bucket_end(period: Period, start: date) -> date:
    if period is Period.DAILY:
        return start + timedelta(days=1)
    if period is Period.WEEKLY:
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


@given(
    st.sampled_from([Period.DAILY, Period.WEEKLY, Period.MONTHLY]),
    st.dates(date(2000, 1, 1), date(2100, 1, 1)),
    st.dates(date(2000, 1, 1), date(2100, 1, 1)),
)
def test_a_tag_is_kept_exactly_while_its_bucket_ends_after_the_day(
    period: Period, day: date, cut: date
) -> None:
    start = {
        Period.DAILY: day,
        Period.WEEKLY: day - timedelta(days=day.weekday()),
        Period.MONTHLY: day.replace(day=1),
    }[period]
    kept = tag(period, start) >= kept_tags_from(cut)[TAG_CODES[period]]
    assert kept == (_bucket_end(period, start) > cut)


@given(
    st.datetimes(datetime(2001, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 400),
    st.integers(0, 400),
    st.integers(0, 400),
    st.integers(0, 90),
)
def test_horizons_only_move_forward_and_events_from_is_the_youngest(
    now: datetime, history: int, buckets: int, distinct: int, earlier: int
) -> None:
    first = advance(Horizons(), now, history, buckets, distinct)
    second = advance(first, now - timedelta(days=earlier), history, buckets, distinct)
    assert second == first  # an earlier clock (or a shorter run) never brings data back
    if history:
        cut = cutoff_day(now, history)
        assert first.history_from is not None and cut is not None
        assert first.history_from <= datetime.combine(cut, datetime.min.time(), UTC)
        assert first.history_from.date() == cut.replace(day=1)  # whole months only
    else:
        assert first.history_from is None
    found = [
        h
        for h in (
            first.history_from,
            *(
                datetime.combine(d, datetime.min.time(), UTC)
                for d in (first.buckets_from, first.distinct_from)
                if d is not None
            ),
        )
        if h is not None
    ]
    assert first.events_from == (max(found) if found else None)


def test_no_month_wholly_before_the_cutoff_is_created() -> None:
    months = months_to_create(PARTITIONS, _utc(2027, 9, 1), cutoff=date(2027, 6, 15))
    assert months == [date(2027, m, 1) for m in range(6, 12)]


def test_zero_days_keep_everything() -> None:
    assert advance(Horizons(), _utc(2040, 1, 1), 0, 0, 0) == Horizons()
    assert Horizons().events_from is None
