"""Pure logic of the per-customer reads: period keys, rolling windows and the history's
keyset cursor.

Summary rows come from the customer's raw history (tens to hundreds of events, read through
an index), aggregated by Postgres (api.customer_queries.SUMMARY_PAGE): exact by construction,
and the same body whichever store holds the buckets, since no bucket is read. Per-customer
counter rows would instead cost row writes on every event.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

import orjson

from core.periods import Period

# The period type of a rolling window's rows (``days=N``); they come after the calendar ones.
ROLLING = "rolling"


def period_key(period: Period, start: date) -> str:
    """``2026-12-01`` (daily), ``2026-W49`` (ISO week), ``2026-12`` (monthly), ``alltime``."""
    if period is Period.DAILY:
        return start.isoformat()
    if period is Period.WEEKLY:
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if period is Period.MONTHLY:
        return f"{start.year:04d}-{start.month:02d}"
    return "alltime"


# ``period_key`` in SQL (api.customer_queries): ``{start}`` is the bucket's first day.
PERIOD_KEY_SQL: dict[Period, str] = {
    Period.DAILY: "to_char({start}, 'YYYY-MM-DD')",
    Period.WEEKLY: "to_char({start}, 'IYYY-\"W\"IW')",
    Period.MONTHLY: "to_char({start}, 'YYYY-MM')",
    Period.ALLTIME: "'alltime'",
}


def iso(moment: datetime) -> str:
    return _iso_utc(moment if moment.tzinfo is UTC else moment.astimezone(UTC))


@lru_cache(maxsize=8192)
def _iso_utc(moment: datetime) -> str:
    # Cached: a customer's latest event is the last contact of its row in every period type.
    return moment.isoformat().replace("+00:00", "Z")


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def rolling_start(days: int, now: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of the last ``days`` UTC days, today included."""
    today = now.astimezone(UTC).date()
    first = max(today - timedelta(days=min(days - 1, (today - date.min).days)), date.min)
    return _midnight(first), _midnight(today) + timedelta(days=1)


class BadCursor(ValueError):
    """A cursor this API did not hand out (or that was altered)."""


def encode_cursor(ts: datetime, event_id: str) -> str:
    """The position after (``ts``, ``event_id``): opaque to clients, base64url JSON."""
    raw = orjson.dumps([ts.astimezone(UTC).isoformat(), event_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts_text, event_id = orjson.loads(raw)
        ts = datetime.fromisoformat(ts_text)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise BadCursor(f"cursor {cursor[:40]!r} was not handed out by this API") from exc
    if ts.tzinfo is None or not isinstance(event_id, str) or "\x00" in event_id:
        raise BadCursor(f"cursor {cursor[:40]!r} was not handed out by this API")
    return ts, event_id
