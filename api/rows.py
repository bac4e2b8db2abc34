"""Pure read-side logic: derived rates and the shaping of counted groups into API rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.catalog import Catalog
from api.summary import GroupBy, GroupCounts, Page
from core.schema import SYSTEM_CLASSES, SYSTEM_TYPES, Classification, sentiment


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
