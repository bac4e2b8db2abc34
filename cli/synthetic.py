"""Seeded, realistic synthetic interactions and the catalog they refer to.

Used by the benchmarks, the CLI's ``produce`` and the demo. Same seed, same ``now``: same
events, byte for byte. The shape of the data follows a decisioning system's traffic:

- 1,000 actions (offers), each with 5 treatments (creatives) on one of 12 channels;
  200,000 customers. Actions and customers are drawn with Zipf-like popularity (a few
  offers and heavy users take most of the traffic), treatments of an action nearly evenly.
- Types in funnel proportions: mostly impressions, then dismisses, clicks, accepts, converts.
- Timestamps uniform over the ``days`` before ``now`` (late events are normal).

Two workloads name the time spreads the benchmarks use (``WORKLOADS``, ``workload_events``):
``realtime``, the last 5 minutes (a live platform's steady state: every event lands in the
current day, week and month), and ``backfill``, the last 90 days.

Events are contract-shaped dicts (``id``, ``timestamp``, ``customerId``, ``actionId``,
``treatmentId``, ``channelId``, ``type`` and optionally ``tenantId``); ``encode`` turns one
into the Kafka key and value the worker reads.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

Event = dict[str, Any]

# Funnel shares, summing to 1: most decisions are shown and ignored.
TYPE_SHARES: dict[str, float] = {
    "impression": 0.82,
    "dismiss": 0.08,
    "click": 0.06,
    "accept": 0.025,
    "convert": 0.015,
}

_ISSUES = ("Revenue Growth", "Retention", "Risk", "Service", "Cross-sell", "Onboarding")
_GROUPS = ("Credit Cards", "Mortgages", "Savings", "Insurance", "Loans", "Investments", "Mobile")
_CHANNEL_TYPES = ("email", "web", "mobile", "sms", "call_center", "branch", "push")
_CHANNEL_NAMES = {
    "email": "Marketing Email",
    "web": "Web Banner",
    "mobile": "Mobile App",
    "sms": "SMS",
    "call_center": "Call Center",
    "branch": "Branch",
    "push": "Push Notification",
}
_TEMPLATES = ("html", "text", "banner", "card", "script")
_OFFER_WORDS = (
    "Premium", "Card", "Upgrade", "Cashback", "Travel", "Rewards", "Home", "Loan", "Saver",
    "Plus", "Family", "Student", "Gold", "Green", "Flex", "Insurance", "Auto", "Pension",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Catalog:
    """Catalog entries in the JSON shape ``catalog load`` takes, plus the customer ids."""

    actions: tuple[dict[str, Any], ...]
    treatments: tuple[dict[str, Any], ...]
    channels: tuple[dict[str, Any], ...]
    customers: tuple[str, ...]

    def document(self) -> dict[str, list[dict[str, Any]]]:
        """The catalog file (actions, treatments, channels); customers are not catalogued."""
        return {
            "actions": list(self.actions),
            "treatments": list(self.treatments),
            "channels": list(self.channels),
        }


def make_catalog(
    seed: int = 0,
    *,
    actions: int = 1000,
    treatments: int = 5000,
    channels: int = 12,
    customers: int = 200_000,
) -> Catalog:
    """A catalog of the given size; ids are stable (``off_0001``, ``cr_00001``, ``ch_01``)."""
    if min(actions, treatments, channels, customers) < 1:
        raise ValueError("every catalog size must be at least 1")
    rng = random.Random(f"catalog:{seed}")
    channel_rows = tuple(_channel(i, rng) for i in range(channels))
    action_rows = tuple(_action(i, rng) for i in range(actions))
    treatment_rows = tuple(
        _treatment(i, action_rows[i % actions], channel_rows, rng) for i in range(treatments)
    )
    width = len(str(customers))
    customer_ids = tuple(f"C-{i + 1:0{width}d}" for i in range(customers))
    return Catalog(action_rows, treatment_rows, channel_rows, customer_ids)


def _channel(i: int, rng: random.Random) -> dict[str, Any]:
    kind = _CHANNEL_TYPES[i % len(_CHANNEL_TYPES)]
    suffix = f" {i // len(_CHANNEL_TYPES) + 1}" if i >= len(_CHANNEL_TYPES) else ""
    return {"id": f"ch_{i + 1:02d}", "name": _CHANNEL_NAMES[kind] + suffix, "channelType": kind}


def _action(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"off_{i + 1:04d}",
        "name": " ".join(rng.sample(_OFFER_WORDS, 3)),
        "issue": rng.choice(_ISSUES),
        "group": rng.choice(_GROUPS),
        "status": "active" if rng.random() < 0.9 else "inactive",
        "priority": rng.randrange(1, 101),
    }


def _treatment(
    i: int, action: dict[str, Any], channels: Sequence[dict[str, Any]], rng: random.Random
) -> dict[str, Any]:
    channel = rng.choice(channels)
    variant = "ABCDE"[i // 1000 % 5] if i >= 1000 else "A"
    return {
        "id": f"cr_{i + 1:05d}",
        "name": f"{channel['channelType'].replace('_', ' ').title()} Variant {variant}",
        "actionId": action["id"],
        "channelId": channel["id"],
        "templateType": rng.choice(_TEMPLATES),
        "abTestVariant": variant,
        "weight": rng.choice((10, 20, 25, 50, 100)),
        "status": "active" if rng.random() < 0.95 else "paused",
    }


def zipf_cum_weights(n: int, exponent: float) -> list[float]:
    """Cumulative weights of ranks 1..n with weight ``1 / rank**exponent``."""
    return list(itertools.accumulate(1.0 / rank**exponent for rank in range(1, n + 1)))


class SyntheticEvents:
    """An endless, seeded stream of contract-shaped interaction events.

    >>> events = SyntheticEvents(seed=7, now=datetime(2025, 1, 31, tzinfo=UTC))
    >>> first = next(iter(events))
    >>> sorted(first)
    ['actionId', 'channelId', 'customerId', 'id', 'timestamp', 'treatmentId', 'type']

    ``batch(n, now=...)`` takes the next ``n`` events with timestamps before another ``now``
    (a live producer passes the wall clock each time; nothing here reads a clock).
    """

    def __init__(
        self,
        seed: int,
        now: datetime,
        *,
        catalog: Catalog | None = None,
        days: float = 90.0,
        tenant_id: str | None = None,
        action_exponent: float = 1.0,
        customer_exponent: float = 0.6,
        untargeted_share: float = 0.02,
        duplicate_share: float = 0.0,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if days < 0 or not 0 <= untargeted_share <= 1 or not 0 <= duplicate_share < 1:
            raise ValueError("days >= 0, untargeted_share in [0, 1], duplicate_share in [0, 1)")
        self.catalog = catalog if catalog is not None else make_catalog(seed)
        self._rng = random.Random(f"events:{seed}")
        self._now = now
        self._span_ms = int(days * 86_400_000)
        self._tenant_id = tenant_id
        self._untargeted = untargeted_share
        self._duplicates = duplicate_share
        self._recent: list[Event] = []
        self._action_cw = zipf_cum_weights(len(self.catalog.actions), action_exponent)
        self._customer_cw = zipf_cum_weights(len(self.catalog.customers), customer_exponent)
        self._type_names = tuple(TYPE_SHARES)
        self._type_cw = list(itertools.accumulate(TYPE_SHARES.values()))
        by_action: dict[str, list[dict[str, Any]]] = {a["id"]: [] for a in self.catalog.actions}
        for treatment in self.catalog.treatments:
            by_action.setdefault(treatment["actionId"], []).append(treatment)
        self._treatments = tuple(tuple(by_action[a["id"]]) for a in self.catalog.actions)
        # Customers are shuffled so popularity does not follow the id order.
        self._customer_order = list(self.catalog.customers)
        self._rng.shuffle(self._customer_order)

    def __iter__(self) -> Iterator[Event]:
        while True:
            yield from self.batch(4096)

    def batch(self, n: int, now: datetime | None = None) -> list[Event]:
        """The next ``n`` events, timestamps uniform over the ``days`` before ``now``."""
        # One draw after another (never k at once), so the stream does not depend on batching.
        end_ms = _epoch_ms(now or self._now)
        rng = self._rng
        random_ = rng.random
        events: list[Event] = []
        for _ in range(n):
            if self._recent and random_() < self._duplicates:
                events.append(rng.choice(self._recent))
                continue
            action = bisect.bisect(self._action_cw, random_() * self._action_cw[-1])
            customer = bisect.bisect(self._customer_cw, random_() * self._customer_cw[-1])
            kind = bisect.bisect(self._type_cw, random_() * self._type_cw[-1])
            event = self._event(
                action,
                self._customer_order[customer],
                self._type_names[kind],
                end_ms - rng.randrange(self._span_ms + 1),
            )
            events.append(event)
            if self._duplicates:
                self._remember(event)
        return events

    def _event(self, action_index: int, customer: str, kind: str, ts_ms: int) -> Event:
        rng = self._rng
        action = self.catalog.actions[action_index]
        event: Event = {
            "id": _uuid(rng.getrandbits(128)),
            "timestamp": _iso(ts_ms),
            "customerId": customer,
            "actionId": action["id"],
        }
        treatments = self._treatments[action_index]
        if treatments and rng.random() >= self._untargeted:
            # Near-even treatment popularity, the first variants a little ahead.
            treatment = treatments[int(len(treatments) * rng.random() ** 1.2)]
            event["treatmentId"] = treatment["id"]
            event["channelId"] = treatment["channelId"]
        event["type"] = kind
        if self._tenant_id is not None:
            event["tenantId"] = self._tenant_id
        return event

    def _remember(self, event: Event) -> None:
        if len(self._recent) < 1000:
            self._recent.append(event)
        else:
            self._recent[self._rng.randrange(1000)] = event


@dataclass(frozen=True, slots=True)
class Workload:
    """A named time spread of the synthetic events (same catalog and popularity for all)."""

    name: str
    days: float
    description: str


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        # Never in the future (the worker rejects events more than 5 minutes ahead).
        Workload("realtime", 5 / 1440, "timestamps over the 5 minutes before now"),
        Workload("backfill", 90.0, "timestamps over the 90 days before now"),
    )
}


def workload_events(
    workload: str, seed: int, now: datetime, *, catalog: Catalog | None = None
) -> SyntheticEvents:
    """The event stream of a named workload (``WORKLOADS``), timestamps before ``now``."""
    try:
        days = WORKLOADS[workload].days
    except KeyError:
        raise ValueError(f"workload {workload!r}: expected one of {sorted(WORKLOADS)}") from None
    return SyntheticEvents(seed, now, catalog=catalog, days=days)


def encode(event: Event) -> tuple[bytes, bytes]:
    """Kafka key (the customer id) and value (compact JSON) of one event."""
    return str(event["customerId"]).encode(), orjson.dumps(event)


def _epoch_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"


def _uuid(bits: int) -> str:
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
