"""Pure read-side logic: derived rates and the shaping of counted groups into API rows."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from api.catalog import Catalog


class GroupBy(StrEnum):
    ACTION = "action"
    TREATMENT = "treatment"
    CHANNEL = "channel"
    CUSTOMER = "customer"


class Window(StrEnum):
    PERIOD = "period"
    ROLLING = "rolling"


class Source(StrEnum):
    REDIS = "redis"
    POSTGRES = "postgres"
    HISTORY = "history"


@dataclass(frozen=True, slots=True)
class GroupCounts:
    """One group's counters in the requested range; ``distinct`` as in core.keys.COUNTERS."""

    group_id: str
    impression: int
    click: int
    dismiss: int
    accept: int
    convert: int
    total: int
    distinct: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """A page of groups in API order, with the number of groups before paging."""

    total_groups: int
    groups: list[GroupCounts]


def rate(numerator: int, impressions: int) -> float:
    """``round(100 * numerator / impressions, 2)``, half-up, 0 without impressions.

    Integer arithmetic keeps the division exact before rounding, so 0.125 becomes 0.13 as a
    person expects (binary floats would make it 0.12); half-up means away from zero, as
    Decimal's ROUND_HALF_UP. Integers, not Decimal: a page computes 200 rates per request.
    """
    if impressions <= 0:
        return 0.0
    # Cents = floor(10_000 * |n| / d + 1/2), all in integers; then the nearest float.
    cents = (20_000 * abs(numerator) + impressions) // (2 * impressions)
    return (cents if numerator >= 0 else -cents) / 100


def sentiment(c: GroupCounts) -> tuple[int, int, int]:
    """(positive, negative, neutral) by the contract: click + accept, dismiss, the rest of impressions."""
    positive = c.click + c.accept
    negative = c.dismiss
    return positive, negative, max(c.impression - positive - negative, 0)


def _counters(c: GroupCounts) -> dict[str, int]:
    return {
        "impression": c.impression,
        "click": c.click,
        "dismiss": c.dismiss,
        "accept": c.accept,
        "convert": c.convert,
        "total": c.total,
    }


def _field(record: Any, name: str) -> Any:
    return None if record is None else record[name]


def action_row(c: GroupCounts, catalog: Catalog) -> dict[str, Any]:
    action = catalog.actions.get(c.group_id)
    positive, negative, neutral = sentiment(c)
    return {
        "id": c.group_id,
        "name": _field(action, "name"),
        "issue": _field(action, "issue"),
        "group": _field(action, "group"),
        "status": _field(action, "status"),
        "priority": _field(action, "priority"),
        **_counters(c),
        "ctr": rate(c.click, c.impression),
        "cvr": rate(c.convert, c.impression),
        "positive": positive,
        "negative": negative,
        "neutral": neutral,
    }


def treatment_row(c: GroupCounts, catalog: Catalog) -> dict[str, Any]:
    treatment = catalog.treatments.get(c.group_id)
    action = catalog.actions.get(_field(treatment, "action_id"))
    channel = catalog.channels.get(_field(treatment, "channel_id"))
    return {
        "id": c.group_id,
        "name": _field(treatment, "name"),
        "offerName": _field(action, "name"),
        "channelType": _field(channel, "channel_type"),
        "channelName": _field(channel, "name"),
        "templateType": _field(treatment, "template_type"),
        "abTestVariant": _field(treatment, "ab_test_variant"),
        "weight": _field(treatment, "weight"),
        "status": _field(treatment, "status"),
        **_counters(c),
        "ctr": rate(c.click, c.impression),
        "cvr": rate(c.convert, c.impression),
    }


def channel_row(c: GroupCounts, catalog: Catalog) -> dict[str, Any]:
    channel = catalog.channels.get(c.group_id)
    return {
        "id": c.group_id,
        "name": _field(channel, "name"),
        "channelType": _field(channel, "channel_type"),
        "treatmentCount": c.distinct,
        **_counters(c),
        "ctr": rate(c.click, c.impression),
    }


def customer_row(c: GroupCounts, catalog: Catalog) -> dict[str, Any]:
    return {
        "customerId": c.group_id,
        "total": c.total,
        "impression": c.impression,
        "click": c.click,
        "dismiss": c.dismiss,
        "accept": c.accept,
        "convert": c.convert,
        "uniqueActions": c.distinct,
    }


ROW_BUILDERS = {
    GroupBy.ACTION: action_row,
    GroupBy.TREATMENT: treatment_row,
    GroupBy.CHANNEL: channel_row,
    GroupBy.CUSTOMER: customer_row,
}


def rows(group_by: GroupBy, page: Page, catalog: Catalog) -> list[dict[str, Any]]:
    build = ROW_BUILDERS[group_by]
    return [build(c, catalog) for c in page.groups]


V = TypeVar("V")


class Recent(Generic[V]):
    """The ``size`` most recently used entries of a map (dashboards poll a few page shapes).

    Holds what is cheap to compare and dear to recompute: a parsed Redis reply, a built body.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
