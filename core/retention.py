"""Retention (issue 13, item 7): what to drop and what is then kept. Pure: callers pass ``now``.

Three horizons, each set by the operator in days (0: keep everything, the default):
- history: the raw history (monthly partitions of ``interaction_history``) and the dedupe
  fence (``event_seen``): a partition goes when all of it is older than the cutoff, so
  history is kept for at least the retention and at most a month more;
- buckets: daily buckets (weekly and monthly are sums of days); all-time buckets stay;
- distinct: the tags of ``distinct_seen`` (the buckets a pair was seen in); the pair's row
  stays, with no tags: it is what keeps the all-time distinct counts exact.

An event older than any horizon reached so far is not counted: its buckets, its history or
its fence row may be gone, so counting it would give a partial bucket or count its id twice
(streams/postgres_sink.py refuses it and the worker dead-letters it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from core.distinct import TAG_CODES, tag
from core.periods import Period, bucket_start, midnight

# The least retention that can be set: the current month (up to 31 days) and a day of grace
# must always be kept, or the current period's answer would be partial.
MIN_RETENTION_DAYS = 35

# A partition range end: None is unbounded (MINVALUE below, MAXVALUE above).
Bound = datetime | None


@dataclass(frozen=True, slots=True)
class Partition:
    """One range partition of the history: ``[since, until)``; both None: the default one."""

    name: str
    since: Bound
    until: Bound

    @property
    def is_default(self) -> bool:
        return self.since is None and self.until is None


@dataclass(frozen=True, slots=True)
class Horizons:
    """What is kept: history and fence rows from ``history_from``, daily buckets from
    ``buckets_from``, distinct tags of buckets from ``distinct_from`` (all None: everything).
    ``events_from``: the youngest of them, below which an event is not counted."""

    history_from: datetime | None = None
    buckets_from: date | None = None
    distinct_from: date | None = None

    @property
    def events_from(self) -> datetime | None:
        found = [
            d
            for d in (
                self.history_from,
                _instant(self.buckets_from),
                _instant(self.distinct_from),
            )
            if d is not None
        ]
        return max(found) if found else None


def _instant(day: date | None) -> datetime | None:
    return None if day is None else midnight(day)


def cutoff_day(now: datetime, days: int) -> date | None:
    """The first UTC day a retention of ``days`` keeps at ``now`` (None: 0, keep all)."""
    if days <= 0:
        return None
    return now.astimezone(UTC).date() - timedelta(days=days)


def month_start(day: date) -> date:
    return bucket_start(Period.MONTHLY, day)


def next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def partitions_to_drop(partitions: list[Partition], cutoff: date | None) -> list[Partition]:
    """The range partitions wholly before ``cutoff`` (never the default one)."""
    if cutoff is None:
        return []
    limit = midnight(cutoff)
    return [p for p in partitions if p.until is not None and p.until <= limit]


def months_to_create(
    partitions: list[Partition], now: datetime, ahead: int = 2, cutoff: date | None = None
) -> list[date]:
    """First days of the monthly partitions missing from the newest range partition's end up
    to ``ahead`` months after ``now``'s month (the rest goes to the default partition); none
    wholly before ``cutoff`` (the history retention's), which would be dropped at once."""
    ends = [p.until for p in partitions if p.until is not None]
    last = month_start(now.astimezone(UTC).date())
    for _ in range(ahead):
        last = next_month(last)
    start = max(ends).astimezone(UTC).date() if ends else month_start(now.date())
    if cutoff is not None:
        start = max(start, month_start(cutoff))
    months = []
    while start <= last:
        months.append(start)
        start = next_month(start)
    return months


def advance(
    current: Horizons,
    now: datetime,
    history_days: int,
    bucket_days: int,
    distinct_days: int,
) -> Horizons:
    """The horizons after a retention run at ``now``: they only move forward (a retention
    lengthened later does not bring dropped data back)."""
    cutoff = cutoff_day(now, history_days)
    # Partitions are months (the legacy one ends on a first too): the one holding the cutoff
    # is kept whole, everything before its start goes.
    history = None if cutoff is None else midnight(month_start(cutoff))
    return Horizons(
        _later(current.history_from, history),
        _later(current.buckets_from, cutoff_day(now, bucket_days)),
        _later(current.distinct_from, cutoff_day(now, distinct_days)),
    )


_T = TypeVar("_T", date, datetime)


def _later(a: _T | None, b: _T | None) -> _T | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def kept_tags_from(day: date) -> dict[int, int]:
    """Per tag code, the least tag kept when distinct tags before ``day`` are dropped: a
    bucket's tag goes once the whole bucket is before ``day``."""
    return {code: tag(period, bucket_start(period, day)) for period, code in TAG_CODES.items()}
