"""What a summary request covers: the ``days`` parameter's period, the buckets to read and
the equivalent half-open instant range. Pure: callers pass ``now`` in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from core.periods import Period, bucket_start, midnight, next_bucket_start


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


def summary_range(days: int, rolling: bool, now: datetime) -> TimeRange:
    """The range a summary for ``days`` covers at ``now``.

    ``window=period``: the current calendar period of the mapped type.
    ``window=rolling``: exactly the last ``days`` UTC days including today, from daily buckets.
    """
    today = now.astimezone(UTC).date()
    if rolling:
        first = today - timedelta(days=days - 1) if days - 1 < (today - date.min).days else date.min
        tomorrow = next_bucket_start(Period.DAILY, today)
        end = midnight(tomorrow) if tomorrow else None
        return TimeRange(Period.DAILY, True, first, today, midnight(first), end)
    period = period_for_days(days)
    start = bucket_start(period, today)
    nxt = next_bucket_start(period, start)
    return TimeRange(period, False, start, start, midnight(start), midnight(nxt) if nxt else None)
