"""Pure logic of the per-customer reads: one customer's events into summary rows, period
keys, and the history's keyset cursor.

Rows come from the customer's raw history (tens to hundreds of events, read through an
index): exact by construction, and the same body whichever store holds the buckets, since
no bucket is read. Per-customer counter rows would instead cost row writes on every event.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson

from api.summary import GroupCounts, sentiment
from core.periods import Period, bucket_starts, next_bucket_start

ROLLING = "rolling"
# Rows are ordered by period type in this order, then period newest first.
PERIOD_ORDER: dict[str, int] = {p.value: i for i, p in enumerate(Period)} | {ROLLING: len(Period)}
_COUNTED = ("impression", "click", "dismiss", "accept", "convert")


@dataclass(frozen=True, slots=True)
class CustomerEvent:
    """One history row of the customer."""

    event_id: str
    ts: datetime
    action_id: str
    treatment_id: str | None
    channel_id: str | None
    type: str
    direction: str | None = None


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


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _period_bounds(period: Period, start: date) -> tuple[str | None, str | None]:
    if period is Period.ALLTIME:
        return None, None
    nxt = next_bucket_start(period, start)
    return iso(_midnight(start)), iso(_midnight(nxt)) if nxt else None


def rolling_start(days: int, now: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of the last ``days`` UTC days, today included."""
    today = now.astimezone(UTC).date()
    first = max(today - timedelta(days=min(days - 1, (today - date.min).days)), date.min)
    return _midnight(first), _midnight(today) + timedelta(days=1)


class _Acc:
    __slots__ = ("counts", "last")

    def __init__(self) -> None:
        self.counts = dict.fromkeys((*_COUNTED, "total"), 0)
        self.last: tuple[datetime, str, str] | None = None

    def add(self, e: CustomerEvent) -> None:
        self.counts["total"] += 1
        if e.type in self.counts:
            self.counts[e.type] += 1
        mark = (e.ts, e.event_id, e.type)
        if self.last is None or mark[:2] > self.last[:2]:
            self.last = mark


# (period type, period start, action, treatment, channel)
_RowKey = tuple[str, date, str, str | None, str | None]


def summary_rows(
    customer: str,
    events: Iterable[CustomerEvent],
    periods: Iterable[Period] | None,
    rolling: tuple[int, datetime, datetime] | None = None,
) -> list[dict[str, Any]]:
    """Rows per (offer, treatment, channel) as they occurred together, per period type and
    period, in API order: period type (daily, weekly, monthly, alltime, rolling), period
    newest first, then offer, treatment and channel ids (absent ones first).

    ``periods``: the calendar period types wanted. ``rolling``: (days, start, end) for one
    row per combination over ``[start, end)`` instead (``events`` already in that range).
    ``lastContactAt`` / ``lastOutcomeKey``: time and type of the row's latest event (ties:
    the greatest event id).
    """
    wanted = set(periods or ())
    accs: dict[_RowKey, _Acc] = {}
    for e in events:
        combo = (e.action_id, e.treatment_id, e.channel_id)
        if rolling is not None:
            keys: list[tuple[str, date]] = [(ROLLING, rolling[1].date())]
        else:
            keys = [(p.value, s) for p, s in bucket_starts(e.ts) if p in wanted]
        for period, start in keys:
            acc = accs.get((period, start, *combo))
            if acc is None:
                acc = accs[(period, start, *combo)] = _Acc()
            acc.add(e)
    ordered = sorted(accs.items(), key=lambda kv: _order(kv[0]))
    return [_row(customer, key, acc, rolling) for key, acc in ordered]


def _order(key: _RowKey) -> tuple[Any, ...]:
    period, start, action, treatment, channel = key
    return (
        PERIOD_ORDER[period],
        -start.toordinal(),
        action,
        treatment is not None,
        treatment or "",
        channel is not None,
        channel or "",
    )


def _row(
    customer: str, key: _RowKey, acc: _Acc, rolling: tuple[int, datetime, datetime] | None
) -> dict[str, Any]:
    period, start, action, treatment, channel = key
    c = acc.counts
    counts = GroupCounts(
        action, c["impression"], c["click"], c["dismiss"], c["accept"], c["convert"], c["total"]
    )
    positive, negative, neutral = sentiment(counts)
    since: str | None
    until: str | None
    if rolling is not None:
        pkey, since, until = f"P{rolling[0]}D", iso(rolling[1]), iso(rolling[2])
    else:
        pkey = period_key(Period(period), start)
        since, until = _period_bounds(Period(period), start)
    assert acc.last is not None
    return {
        "customerId": customer,
        "offerId": action,
        "treatmentId": treatment,
        "creativeId": treatment,
        "channelId": channel,
        "periodType": period,
        "periodKey": pkey,
        "start": since,
        "end": until,
        "impressions": c["impression"],
        "positive": positive,
        "negative": negative,
        "neutral": neutral,
        "converts": c["convert"],
        "total": c["total"],
        "lastContactAt": iso(acc.last[0]),
        "lastOutcomeKey": acc.last[2],
    }


def history_row(customer: str, e: CustomerEvent) -> dict[str, Any]:
    return {
        "id": e.event_id,
        "timestamp": iso(e.ts),
        "customerId": customer,
        "actionId": e.action_id,
        "offerId": e.action_id,
        "treatmentId": e.treatment_id,
        "creativeId": e.treatment_id,
        "channelId": e.channel_id,
        "type": e.type,
        "direction": e.direction,
    }


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
    if ts.tzinfo is None or not isinstance(event_id, str):
        raise BadCursor(f"cursor {cursor[:40]!r} was not handed out by this API")
    return ts, event_id
