"""What a summary is made of: the request's vocabulary (group by, window, source) and the
counted groups every source answers with (``GroupCounts``, ``Page``).

Shaping groups into API rows is api/rows.py; the small LRU memo is api/recent.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from core.schema import ROW_COUNTERS, SYSTEM_TYPES


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
