"""Pure logic of the per-customer reads: one customer's events into summary rows, period
keys, and the history's keyset cursor.

Rows come from the customer's raw history (tens to hundreds of events, read through an
index): exact by construction, and the same body whichever store holds the buckets, since
no bucket is read. Per-customer counter rows would instead cost row writes on every event.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

import orjson

from core.periods import Period, bucket_starts, next_bucket_start
from core.schema import SYSTEM_CLASSES, SYSTEM_TYPES, Classification, sentiment

ROLLING = "rolling"
# Rows are ordered by period type in this order, then period newest first.
PERIOD_ORDER: dict[str, int] = {p.value: i for i, p in enumerate(Period)} | {ROLLING: len(Period)}
# Period is a StrEnum: its members are keys of PERIOD_ORDER too.
_COUNTED = SYSTEM_TYPES


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
    return _iso_utc(moment if moment.tzinfo is UTC else moment.astimezone(UTC))


@lru_cache(maxsize=8192)
def _iso_utc(moment: datetime) -> str:
    # Cached: a customer's latest event is the last contact of its row in every period type.
    return moment.isoformat().replace("+00:00", "Z")


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@lru_cache(maxsize=4096)
def _period_info(period: Period, start: date) -> tuple[str, str | None, str | None]:
    """(periodKey, start, end) of a calendar bucket; computed once per bucket and process."""
    if period is Period.ALLTIME:
        return period_key(period, start), None, None
    nxt = next_bucket_start(period, start)
    return period_key(period, start), iso(_midnight(start)), iso(_midnight(nxt)) if nxt else None


def rolling_start(days: int, now: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of the last ``days`` UTC days, today included."""
    today = now.astimezone(UTC).date()
    first = max(today - timedelta(days=min(days - 1, (today - date.min).days)), date.min)
    return _midnight(first), _midnight(today) + timedelta(days=1)


# An accumulator: the counts in _COUNTED order, total, then the latest (ts, event id, type),
# then the counts of custom outcome types (a dict, None until the row has one).
_TOTAL, _LAST_TS, _LAST_ID, _LAST_TYPE, _CUSTOM = (
    len(_COUNTED),
    len(_COUNTED) + 1,
    len(_COUNTED) + 2,
    len(_COUNTED) + 3,
    len(_COUNTED) + 4,
)
_SLOT = {t: i for i, t in enumerate(_COUNTED)}
# (period type, period start, action, treatment, channel)
_RowKey = tuple[Period | str, date, str, str | None, str | None]


def summary_rows(
    customer: str,
    events: Iterable[CustomerEvent],
    periods: Iterable[Period] | None,
    rolling: tuple[int, datetime, datetime] | None = None,
    classes: Mapping[str, Classification] = SYSTEM_CLASSES,
) -> list[dict[str, Any]]:
    """Every row of ``summary_page``."""
    return summary_page(customer, events, periods, rolling, classes=classes)[0]


def summary_page(
    customer: str,
    events: Iterable[CustomerEvent],
    periods: Iterable[Period] | None,
    rolling: tuple[int, datetime, datetime] | None = None,
    limit: int | None = None,
    classes: Mapping[str, Classification] = SYSTEM_CLASSES,
) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` rows (all when None) and the number of rows.

    Rows per (offer, treatment, channel) as they occurred together, per period type and
    period, in API order: period type (daily, weekly, monthly, alltime, rolling), period
    newest first, then offer, treatment and channel ids (absent ones first).

    ``periods``: the calendar period types wanted. ``rolling``: (days, start, end) for one
    row per combination over ``[start, end)`` instead (``events`` already in that range).
    ``lastContactAt`` / ``lastOutcomeKey``: time and type of the row's latest event (ties:
    the greatest event id). ``positive``/``negative``/``neutral`` follow ``classes`` (the
    tenant's outcome-type registry). Only the rows of the page are built (measured: building every
    row was most of a request's CPU for customers with many rows).
    """
    wanted = set(periods or ())
    accs: dict[_RowKey, list[Any]] = {}
    for e in events:
        combo = (e.action_id, e.treatment_id, e.channel_id)
        if rolling is not None:
            keys: Iterable[tuple[Period | str, date]] = ((ROLLING, rolling[1].date()),)
        else:
            keys = [b for b in bucket_starts(e.ts) if b[0] in wanted]
        slot = _SLOT.get(e.type)
        for period, start in keys:
            key = (period, start, *combo)
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = [0, 0, 0, 0, 0, 0, e.ts, e.event_id, e.type, None]
            elif (e.ts, e.event_id) > (acc[_LAST_TS], acc[_LAST_ID]):
                acc[_LAST_TS], acc[_LAST_ID], acc[_LAST_TYPE] = e.ts, e.event_id, e.type
            acc[_TOTAL] += 1
            if slot is not None:
                acc[slot] += 1
            else:
                custom = acc[_CUSTOM] = acc[_CUSTOM] or {}
                custom[e.type] = custom.get(e.type, 0) + 1
    ordered = sorted(accs, key=_order)
    page = ordered if limit is None else ordered[:limit]
    return [_row(customer, key, accs[key], rolling, classes) for key in page], len(ordered)


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
    customer: str,
    key: _RowKey,
    acc: list[Any],
    rolling: tuple[int, datetime, datetime] | None,
    classes: Mapping[str, Classification],
) -> dict[str, Any]:
    period, start, action, treatment, channel = key
    counts = dict(zip(_COUNTED, acc, strict=False)) | (acc[_CUSTOM] or {})
    positive, negative, neutral = sentiment(counts, classes)
    since: str | None
    until: str | None
    if rolling is not None:
        pkey, since, until = f"P{rolling[0]}D", iso(rolling[1]), iso(rolling[2])
    else:
        assert isinstance(period, Period)
        pkey, since, until = _period_info(period, start)
    return {
        "customerId": customer,
        "offerId": action,
        "treatmentId": treatment,
        "creativeId": treatment,
        "channelId": channel,
        "periodType": period if isinstance(period, str) else period.value,
        "periodKey": pkey,
        "start": since,
        "end": until,
        "impressions": counts["impression"],
        "positive": positive,
        "negative": negative,
        "neutral": neutral,
        "converts": counts["convert"],
        "total": acc[_TOTAL],
        "lastContactAt": iso(acc[_LAST_TS]),
        "lastOutcomeKey": acc[_LAST_TYPE],
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
    if ts.tzinfo is None or not isinstance(event_id, str) or "\x00" in event_id:
        raise BadCursor(f"cursor {cursor[:40]!r} was not handed out by this API")
    return ts, event_id
