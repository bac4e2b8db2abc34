"""Pure counting: a batch of accepted interactions -> per-bucket counter deltas.

Both stores apply the same deltas; the Postgres sink decides which events and distinct
pairs are new, this module only does arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from typing import NamedTuple

import orjson

from core.keys import COUNTERS
from core.periods import Period, bucket_starts
from streams.events import KNOWN_TYPES, Interaction

DIMENSIONS: tuple[str, ...] = ("action", "treatment", "channel", "customer")

_TOTAL = COUNTERS.index("total")
_DISTINCT = COUNTERS.index("distinct")
_TYPE_INDEX = {name: COUNTERS.index(name) for name in KNOWN_TYPES}


class BucketKey(NamedTuple):
    tenant_id: str
    dimension: str
    period: Period
    start: date
    group_id: str


class DistinctPair(NamedTuple):
    """``item_id`` seen by ``group_id`` in a bucket: an action of a customer, a treatment of a channel."""

    tenant_id: str
    dimension: str
    period: Period
    start: date
    group_id: str
    item_id: str


Deltas = dict[BucketKey, list[int]]


def unique_by_id(events: Iterable[Interaction]) -> list[Interaction]:
    """First occurrence of each (tenant, event id); later copies are duplicates."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for event in events:
        key = (event.tenant_id, event.id)
        if key not in seen:
            seen.add(key)
            unique.append(event)
    return unique


def groups_of(event: Interaction) -> Iterator[tuple[str, str]]:
    """(dimension, group id) for every dimension the event has."""
    yield "action", event.action_id
    if event.treatment_id is not None:
        yield "treatment", event.treatment_id
    if event.channel_id is not None:
        yield "channel", event.channel_id
    yield "customer", event.customer_id


def batch_deltas(events: Iterable[Interaction]) -> Deltas:
    """Counter deltas of every bucket the events touch (``distinct`` left at 0)."""
    deltas: Deltas = {}
    for event in events:
        type_index = _TYPE_INDEX.get(event.type)
        buckets = bucket_starts(event.timestamp)
        for dimension, group_id in groups_of(event):
            for period, start in buckets:
                key = BucketKey(event.tenant_id, dimension, period, start, group_id)
                row = deltas.get(key)
                if row is None:
                    row = deltas[key] = [0] * len(COUNTERS)
                row[_TOTAL] += 1
                if type_index is not None:
                    row[type_index] += 1
    return deltas


def distinct_pairs(events: Iterable[Interaction]) -> set[DistinctPair]:
    """Every (customer, action) and (channel, treatment) pair per bucket in the events."""
    pairs: set[DistinctPair] = set()
    for event in events:
        for period, start in bucket_starts(event.timestamp):
            pairs.add(
                DistinctPair(
                    event.tenant_id, "customer", period, start, event.customer_id, event.action_id
                )
            )
            if event.channel_id is not None and event.treatment_id is not None:
                pairs.add(
                    DistinctPair(
                        event.tenant_id,
                        "channel",
                        period,
                        start,
                        event.channel_id,
                        event.treatment_id,
                    )
                )
    return pairs


def add_distinct(deltas: Deltas, new_pairs: Iterable[DistinctPair]) -> None:
    """Count each pair the store had not seen before once in its group's ``distinct``."""
    for pair in new_pairs:
        key = BucketKey(pair.tenant_id, pair.dimension, pair.period, pair.start, pair.group_id)
        row = deltas.get(key)
        if row is None:
            row = deltas[key] = [0] * len(COUNTERS)
        row[_DISTINCT] += 1


def encode_deltas(deltas: Deltas) -> bytes:
    """The outbox form of a batch's deltas: compact JSON rows, sorted so replays are identical."""
    rows = [
        [k.tenant_id, k.dimension, str(k.period), k.start.isoformat(), k.group_id, *v]
        for k, v in sorted(deltas.items())
    ]
    return orjson.dumps(rows)


def decode_deltas(payload: bytes) -> Deltas:
    """Inverse of ``encode_deltas``."""
    deltas: Deltas = {}
    for tenant_id, dimension, period, start, group_id, *counts in orjson.loads(payload):
        key = BucketKey(tenant_id, dimension, Period(period), date.fromisoformat(start), group_id)
        deltas[key] = counts
    return deltas
