"""An independent, deliberately naive recount of what the service must report.

Written from the contract, not from the service's code: plain loops and date arithmetic,
so a bug in the optimized path cannot hide in a shared helper.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

from core.schema import SYSTEM_CLASSES, SYSTEM_TYPES

KNOWN = SYSTEM_TYPES
ALLTIME = date(1, 1, 1)


@dataclass(frozen=True)
class Event:
    id: str
    tenant: str
    ts: datetime
    customer: str
    action: str
    treatment: str | None
    channel: str | None
    type: str


def from_payload(doc: dict[str, Any]) -> Event:
    """A valid contract payload as the test understands it."""
    ts = doc["timestamp"]
    if isinstance(ts, int):
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts)
    else:
        moment = datetime.fromisoformat(ts).astimezone(UTC)
    return Event(
        doc["id"],
        doc.get("tenantId") or "default",
        moment,
        doc["customerId"],
        doc["actionId"],
        doc.get("treatmentId"),
        doc.get("channelId"),
        doc["type"],
    )


def distinct_events(payloads: list[dict[str, Any]]) -> list[Event]:
    """Each (tenant, id) once: the first time it was published."""
    seen: set[tuple[str, str]] = set()
    out = []
    for doc in payloads:
        event = from_payload(doc)
        if (event.tenant, event.id) not in seen:
            seen.add((event.tenant, event.id))
            out.append(event)
    return out


def buckets_of(moment: datetime) -> list[tuple[str, date]]:
    day = moment.date()
    monday = day - timedelta(days=day.weekday())
    return [
        ("daily", day),
        ("weekly", monday),
        ("monthly", date(day.year, day.month, 1)),
        ("alltime", ALLTIME),
    ]


def groups_of(e: Event) -> list[tuple[str, str]]:
    out = [("action", e.action), ("customer", e.customer)]
    if e.treatment is not None:
        out.append(("treatment", e.treatment))
    if e.channel is not None:
        out.append(("channel", e.channel))
    return out


BucketId = tuple[str, str, str, date, str]  # tenant, dimension, period, start, group


def expected_buckets(events: list[Event]) -> dict[BucketId, tuple[int, ...]]:
    """Every bucket: (*KNOWN, total, distinct), as core.schema.COUNTERS."""
    total = len(KNOWN)
    counts: dict[BucketId, list[int]] = defaultdict(lambda: [0] * (total + 1))
    items: dict[BucketId, set[str]] = defaultdict(set)
    for e in events:
        for period, start in buckets_of(e.ts):
            for dimension, group in groups_of(e):
                row = counts[(e.tenant, dimension, period, start, group)]
                row[total] += 1
                if e.type in KNOWN:
                    row[KNOWN.index(e.type)] += 1
            items[(e.tenant, "customer", period, start, e.customer)].add(e.action)
            if e.channel is not None and e.treatment is not None:
                items[(e.tenant, "channel", period, start, e.channel)].add(e.treatment)
    return {key: (*row, len(items.get(key, ()))) for key, row in counts.items()}


def expected_outcomes(events: list[Event]) -> dict[tuple[BucketId, str], int]:
    """Every bucket's count of each type without a counter of its own (custom types)."""
    counts: dict[tuple[BucketId, str], int] = defaultdict(int)
    for e in events:
        if e.type in KNOWN:
            continue
        for period, start in buckets_of(e.ts):
            for dimension, group in groups_of(e):
                counts[((e.tenant, dimension, period, start, group), e.type)] += 1
    return dict(counts)


def half_up(numerator: int, impressions: int) -> float:
    if impressions == 0:
        return 0.0
    return math.floor(Fraction(100 * numerator, impressions) * 100 + Fraction(1, 2)) / 100


def expected_summary(
    events: list[Event],
    tenant: str,
    group_by: str,
    start: datetime,
    end: datetime | None,
    limit: int,
    offset: int,
    classes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``total`` and ``summary`` (counters only: catalog fields are checked separately).

    ``classes``: the tenant's custom types' classifications (the system ones always apply)."""
    classification = {**(classes or {}), **{k: v.value for k, v in SYSTEM_CLASSES.items()}}
    column = {
        "action": "action",
        "treatment": "treatment",
        "channel": "channel",
        "customer": "customer",
    }[group_by]
    rows: dict[str, dict[str, Any]] = {}
    types: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    items: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.tenant != tenant or e.ts < start or (end is not None and e.ts >= end):
            continue
        group = getattr(e, column)
        if group is None:
            continue
        row = rows.setdefault(group, dict.fromkeys((*KNOWN, "total"), 0))
        row["total"] += 1
        types[group][e.type] += 1
        if e.type in KNOWN:
            row[e.type] += 1
        if group_by == "customer":
            items[group].add(e.action)
        if group_by == "channel" and e.treatment is not None:
            items[group].add(e.treatment)
    ordered = sorted(rows.items(), key=lambda kv: (-kv[1]["total"], kv[0]))
    page = []
    for group, c in ordered[offset : offset + limit]:
        row = {("customerId" if group_by == "customer" else "id"): group, **c}
        if group_by in ("action", "treatment", "channel"):
            row["ctr"] = half_up(c["click"], c["impression"])
        if group_by in ("action", "treatment"):
            row["cvr"] = half_up(c["convert"], c["impression"])
        if group_by == "action":
            counted = types[group]
            row["positive"] = sum(
                n for t, n in counted.items() if classification.get(t) == "positive"
            )
            row["negative"] = sum(
                n for t, n in counted.items() if classification.get(t) == "negative"
            )
            row["neutral"] = max(c["impression"] - row["positive"] - row["negative"], 0)
        if group_by == "channel":
            row["treatmentCount"] = len(items[group])
        if group_by == "customer":
            row["uniqueActions"] = len(items[group])
        row["outcomes"] = dict(types[group])
        page.append(row)
    return {"total": len(rows), "summary": page}


def summary_window(days: int, rolling: bool, now: datetime) -> tuple[datetime, datetime | None]:
    """The contract's time range for ``days`` (section 3), computed by hand."""
    today = now.date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    if rolling:
        return midnight - timedelta(days=days - 1), midnight + timedelta(days=1)
    if days == 1:
        return midnight, midnight + timedelta(days=1)
    if days <= 7:
        monday = midnight - timedelta(days=today.weekday())
        return monday, monday + timedelta(days=7)
    if days <= 31:
        first = datetime(today.year, today.month, 1, tzinfo=UTC)
        nxt = datetime(today.year + (today.month == 12), today.month % 12 + 1, 1, tzinfo=UTC)
        return first, nxt
    return datetime(1, 1, 1, tzinfo=UTC), None


def _period_key(period: str, start: date) -> str:
    if period == "daily":
        return start.isoformat()
    if period == "weekly":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "monthly":
        return start.strftime("%Y-%m")
    return "alltime"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").removesuffix(".000000") + "Z"


def _end_of(period: str, start: date) -> date:
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    return date(start.year + (start.month == 12), start.month % 12 + 1, 1)


def expected_customer_summaries(
    events: list[Event],
    tenant: str,
    customer: str,
    periods: tuple[str, ...] = ("daily", "weekly", "monthly", "alltime"),
    offer: str | None = None,
    treatment: str | None = None,
    channel: str | None = None,
    days: int | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """GET /api/v1/interaction-summaries by hand: rows per (offer, treatment, channel), period
    type and period, sorted by period type, period newest first, then the ids (null first)."""
    mine = [
        e
        for e in events
        if e.tenant == tenant
        and e.customer == customer
        and (offer is None or e.action == offer)
        and (treatment is None or e.treatment == treatment)
        and (channel is None or e.channel == channel)
    ]
    grouped: dict[tuple[str, date, str, str | None, str | None], list[Event]] = defaultdict(list)
    if days is not None:
        assert now is not None
        today = now.astimezone(UTC).date()
        first = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=days - 1)
        last = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
        for e in mine:
            if first <= e.ts < last:
                grouped[("rolling", first.date(), e.action, e.treatment, e.channel)].append(e)
    else:
        for e in mine:
            for period, start in buckets_of(e.ts):
                if period in periods:
                    grouped[(period, start, e.action, e.treatment, e.channel)].append(e)
    order = ["daily", "weekly", "monthly", "alltime", "rolling"]
    rows = []
    for key in sorted(
        grouped,
        key=lambda k: (order.index(k[0]), -k[1].toordinal(), k[2], k[3] or "", k[4] or ""),
    ):
        period, start, action, treat, chan = key
        group = grouped[key]
        kinds = [e.type for e in group]
        positive = kinds.count("click") + kinds.count("accept")
        negative = kinds.count("dismiss")
        latest = max(group, key=lambda e: (e.ts, e.id))
        if period == "rolling":
            assert days is not None
            pkey, since, until = f"P{days}D", _iso(first), _iso(last)
        elif period == "alltime":
            pkey, since, until = "alltime", None, None
        else:
            end = _end_of(period, start)
            pkey = _period_key(period, start)
            since = _iso(datetime(start.year, start.month, start.day, tzinfo=UTC))
            until = _iso(datetime(end.year, end.month, end.day, tzinfo=UTC))
        rows.append(
            {
                "customerId": customer,
                "offerId": action,
                "treatmentId": treat,
                "creativeId": treat,
                "channelId": chan,
                "periodType": period,
                "periodKey": pkey,
                "start": since,
                "end": until,
                "impressions": kinds.count("impression"),
                "positive": positive,
                "negative": negative,
                "neutral": max(kinds.count("impression") - positive - negative, 0),
                "converts": kinds.count("convert"),
                "total": len(group),
                "lastContactAt": _iso(latest.ts),
                "lastOutcomeKey": latest.type,
            }
        )
    return rows
