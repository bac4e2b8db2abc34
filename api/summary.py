"""Pure read-side logic: derived rates and the shaping of counted groups into API rows."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from api.catalog import Catalog
from core.schema import ROW_COUNTERS, SYSTEM_CLASSES, SYSTEM_TYPES, Classification, sentiment


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


class GroupCounts:
    """One group's counters in the requested range.

    Built positionally in core.schema.ROW_COUNTERS order (the system types, then ``total``),
    then ``distinct`` (as in core.schema.COUNTERS); ``custom`` holds the counts of the types
    without a counter of their own. Never changed once built (the body cache relies on it).
    """

    __slots__ = ("counts", "custom", "distinct", "group_id")
    group_id: str
    counts: dict[str, int]
    distinct: int
    custom: Mapping[str, int]

    def __init__(
        self, group_id: str, *values: int, custom: Mapping[str, int] | None = None
    ) -> None:
        width = len(ROW_COUNTERS)
        if len(values) not in (width, width + 1):
            raise TypeError(f"GroupCounts takes {width} counters and distinct, got {len(values)}")
        object.__setattr__(self, "group_id", group_id)
        object.__setattr__(self, "counts", dict(zip(ROW_COUNTERS, values, strict=False)))
        object.__setattr__(self, "distinct", values[width] if len(values) > width else 0)
        object.__setattr__(self, "custom", custom or {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("GroupCounts is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GroupCounts):
            return NotImplemented
        return (self.group_id, self.counts, self.distinct, self.custom) == (
            other.group_id, other.counts, other.distinct, other.custom
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GroupCounts({self.group_id!r}, {self.counts}, {self.distinct}, {self.custom})"

    def of(self, name: str) -> int:
        """The count of a counter or of any outcome type (0 when none was counted)."""
        found = self.counts.get(name)
        return found if found is not None else self.custom.get(name, 0)

    def with_distinct(self, n: int) -> GroupCounts:
        return GroupCounts(self.group_id, *self.counts.values(), n, custom=self.custom)

    def with_custom(self, custom: Mapping[str, int]) -> GroupCounts:
        return GroupCounts(self.group_id, *self.counts.values(), self.distinct, custom=custom)

    def outcomes(self) -> dict[str, int]:
        """Every outcome type counted in the range: system types in their order, then the
        others by key; zero counts left out (every source leaves them out alike)."""
        found = {t: n for t in SYSTEM_TYPES if (n := self.counts[t])}
        found.update((t, n) for t, n in sorted(self.custom.items()) if n)
        return found


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


def _counters(c: GroupCounts) -> dict[str, int]:
    return dict(c.counts)


def _field(record: Any, name: str) -> Any:
    return None if record is None else record[name]


def action_row(
    c: GroupCounts, catalog: Catalog, classes: Mapping[str, Classification] = SYSTEM_CLASSES
) -> dict[str, Any]:
    action = catalog.actions.get(c.group_id)
    positive, negative, neutral = sentiment({**c.counts, **c.custom}, classes)
    impression = c.of("impression")
    return {
        "id": c.group_id,
        "name": _field(action, "name"),
        "issue": _field(action, "issue"),
        "group": _field(action, "group"),
        "status": _field(action, "status"),
        "priority": _field(action, "priority"),
        **_counters(c),
        "ctr": rate(c.of("click"), impression),
        "cvr": rate(c.of("convert"), impression),
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
        "ctr": rate(c.of("click"), c.of("impression")),
        "cvr": rate(c.of("convert"), c.of("impression")),
    }


def channel_row(c: GroupCounts, catalog: Catalog) -> dict[str, Any]:
    channel = catalog.channels.get(c.group_id)
    return {
        "id": c.group_id,
        "name": _field(channel, "name"),
        "channelType": _field(channel, "channel_type"),
        "treatmentCount": c.distinct,
        **_counters(c),
        "ctr": rate(c.of("click"), c.of("impression")),
    }


def customer_row(c: GroupCounts, catalog: Catalog) -> dict[str, Any]:
    return {
        "customerId": c.group_id,
        "total": c.of("total"),
        **{t: c.counts[t] for t in SYSTEM_TYPES},
        "uniqueActions": c.distinct,
    }


ROW_BUILDERS = {
    GroupBy.ACTION: action_row,
    GroupBy.TREATMENT: treatment_row,
    GroupBy.CHANNEL: channel_row,
    GroupBy.CUSTOMER: customer_row,
}


def rows(
    group_by: GroupBy,
    page: Page,
    catalog: Catalog,
    classes: Mapping[str, Classification] | None = None,
) -> list[dict[str, Any]]:
    """The API rows of a page. With the tenant's registry (``classes``, as the API always
    passes it) every row also carries ``outcomes`` and the action rows' sentiment follows
    the registry; without, the rows have the seed documents' shape."""
    if classes is None:
        return [ROW_BUILDERS[group_by](c, catalog) for c in page.groups]
    if group_by is GroupBy.ACTION:
        built = [action_row(c, catalog, classes) for c in page.groups]
    else:
        built = [ROW_BUILDERS[group_by](c, catalog) for c in page.groups]
    for row, c in zip(built, page.groups, strict=True):
        row["outcomes"] = c.outcomes()
    return built


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
