"""Which buckets Redis keeps (the hot read model) and until when. Pure: callers pass ``now``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from core.periods import Period, bucket_start, midnight, next_bucket_start

# Redis keeps a bucket until a day after the bucket ends: long enough for late events and for
# readers of the just-finished period, short enough that the hot model stays small.
REDIS_GRACE = timedelta(days=1)


def redis_expiry(period: Period, start: date) -> datetime | None:
    """When Redis may forget the bucket starting at ``start``; None: keep forever (all-time,
    and the last buckets of the calendar, whose end plus grace is past 9999-12-31)."""
    nxt = next_bucket_start(period, start)
    if period is Period.ALLTIME or nxt is None or nxt > date.max - REDIS_GRACE:
        return None
    return midnight(nxt) + REDIS_GRACE


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
