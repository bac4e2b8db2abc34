"""Seeded test traffic: valid events (late ones, other types, optional fields missing, two
tenants), republished duplicates, and messages that break the contract."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

TYPES = ["impression"] * 12 + ["click"] * 3 + ["dismiss"] * 2 + ["accept", "convert", "hover_3s"]


@dataclass
class Traffic:
    messages: list[dict[str, Any] | bytes] = field(default_factory=list)
    valid: list[dict[str, Any]] = field(
        default_factory=list
    )  # in publish order, duplicates included
    invalid: list[bytes] = field(default_factory=list)


def _timestamp(rng: random.Random, now: datetime) -> str | int:
    moment = now - timedelta(seconds=rng.randint(0, 45 * 86_400))  # late events: up to 45 days back
    if rng.random() < 0.1:  # the contract's other timestamp form
        return int(moment.timestamp() * 1000)
    offset = timezone(timedelta(hours=rng.choice([0, 0, 2, -5, 5.5])))
    return moment.astimezone(offset).isoformat()


def _event(rng: random.Random, i: int, now: datetime, tenants: tuple[str, ...]) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": f"ev-{i:07d}",
        "timestamp": _timestamp(rng, now),
        "customerId": f"C-{rng.randint(1, 40):03d}",
        "actionId": f"act-{min(int(rng.paretovariate(1.2)), 15):02d}",
        "type": rng.choice(TYPES),
    }
    if rng.random() < 0.9:
        event["treatmentId"] = f"tr-{rng.randint(1, 12):02d}"
    if rng.random() < 0.85:
        event["channelId"] = rng.choice(["email", "web", "push", "sms"])
    tenant = rng.choice(tenants)
    if tenant != "default" or rng.random() < 0.5:
        event["tenantId"] = tenant
    return event


INVALID_SAMPLES: list[bytes] = [
    b"not json at all",
    b"\xff\xfe invalid utf-8",
    b'["an", "array"]',
    orjson.dumps(
        {"timestamp": "2026-01-01T00:00:00Z", "customerId": "C", "actionId": "A", "type": "click"}
    ),
    orjson.dumps(
        {"id": "x" * 129, "timestamp": 0, "customerId": "C", "actionId": "A", "type": "click"}
    ),
    orjson.dumps(
        {"id": "bad-type", "timestamp": 0, "customerId": "C", "actionId": "A", "type": "Click!"}
    ),
    orjson.dumps(
        {
            "id": "no-tz",
            "timestamp": "2026-01-01T00:00:00",
            "customerId": "C",
            "actionId": "A",
            "type": "click",
        }
    ),
    orjson.dumps(
        {"id": "wrong", "timestamp": 0, "customerId": 12, "actionId": "A", "type": "click"}
    ),
    orjson.dumps(
        {
            "id": "future",
            "timestamp": "2999-01-01T00:00:00Z",
            "customerId": "C",
            "actionId": "A",
            "type": "click",
        }
    ),
]


def make_traffic(
    count: int,
    seed: int = 7,
    now: datetime | None = None,
    duplicate_share: float = 0.05,
    invalid_count: int = 27,
    tenants: tuple[str, ...] = ("default", "acme"),
) -> Traffic:
    """``count`` distinct events, plus republished duplicates and invalid messages mixed in."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    traffic = Traffic()
    for i in range(count):
        event = _event(rng, i, now, tenants)
        traffic.messages.append(event)
        traffic.valid.append(event)
        if traffic.valid and rng.random() < duplicate_share:  # an earlier event published again
            again = rng.choice(traffic.valid)
            traffic.messages.append(again)
            traffic.valid.append(again)
    for j in range(invalid_count):
        bad = INVALID_SAMPLES[j % len(INVALID_SAMPLES)]
        traffic.messages.insert(rng.randrange(len(traffic.messages) + 1), bad)
        traffic.invalid.append(bad)
    return traffic


# Custom outcome types (issue 11): no counter of their own, counted per type.
CUSTOM_TYPES = ("applied", "quote_requested", "deferred")


def custom_traffic(count: int, seed: int, id_prefix: str = "", share: float = 0.15) -> Traffic:
    """``make_traffic`` with about ``share`` of the events of CUSTOM_TYPES (besides its 5%
    hover_3s), ids prefixed with ``id_prefix``."""
    traffic = make_traffic(count, seed=seed)
    rng = random.Random(seed)
    for event in {id(e): e for e in traffic.valid}.values():  # duplicates are the same dict
        event["id"] = id_prefix + event["id"]
        if rng.random() < share:
            event["type"] = rng.choice(CUSTOM_TYPES)
    return traffic
