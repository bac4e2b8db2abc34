"""The one declaration of outcome types and counters, and what derives from it."""

from __future__ import annotations

from datetime import date

import orjson
from hypothesis import given
from hypothesis import strategies as st

from api.catalog import Catalog
from api.models import ActionRow, CustomerRow, DayCounts
from api.rows import rows
from api.summary import GroupBy, GroupCounts, Page
from core import keys
from core.periods import Period
from core.schema import (
    COUNTERS,
    ROW_COUNTERS,
    SYSTEM_CLASSES,
    SYSTEM_TYPES,
    Classification,
    sentiment,
)
from streams.events import KNOWN_TYPES
from streams.outbox import HotBucket
from streams.redis_sink import apply_payload

EMPTY = Catalog()
TYPES = st.sampled_from([*SYSTEM_TYPES, "applied", "deferred", "hover_3s", "distinct"])
CLASSES = st.sampled_from(list(Classification))


def test_the_seed_classification_is_the_contracts() -> None:
    assert SYSTEM_TYPES == ("impression", "click", "dismiss", "accept", "convert")
    assert {k for k, v in SYSTEM_CLASSES.items() if v is Classification.POSITIVE} == {
        "click",
        "accept",
    }
    assert {k for k, v in SYSTEM_CLASSES.items() if v is Classification.NEGATIVE} == {"dismiss"}
    # the seed's action row: positive 87 = click + accept, negative 45, neutral 1118
    counts = {"impression": 1250, "click": 87, "dismiss": 45, "accept": 0, "convert": 32}
    assert sentiment(counts, SYSTEM_CLASSES) == (87, 45, 1118)


@given(
    st.dictionaries(TYPES, st.integers(0, 10**6)),
    st.dictionaries(st.sampled_from(["applied", "deferred", "hover_3s"]), CLASSES),
)
def test_sentiment_sums_counts_by_the_registry(
    counts: dict[str, int], custom: dict[str, Classification]
) -> None:
    classes = {**custom, **SYSTEM_CLASSES}
    positive, negative, neutral = sentiment(counts, classes)
    by_hand = {c: 0 for c in Classification}
    for key, n in counts.items():
        by_hand[classes.get(key, Classification.NEUTRAL)] += n
    assert (positive, negative) == (by_hand[Classification.POSITIVE], by_hand["negative"])
    assert neutral == max(counts.get("impression", 0) - positive - negative, 0)


def test_everything_derives_from_the_declaration() -> None:
    assert KNOWN_TYPES == SYSTEM_TYPES
    assert COUNTERS == (*SYSTEM_TYPES, "total", "distinct")
    assert keys.HASH_COUNTERS == (*SYSTEM_TYPES, "distinct")
    model_counters = [f for f in ActionRow.model_fields if f in (*ROW_COUNTERS, "outcomes")]
    assert model_counters == [*ROW_COUNTERS, "outcomes"]
    assert {*ROW_COUNTERS, "outcomes", "customerId", "uniqueActions"} == set(
        CustomerRow.model_fields
    )
    assert list(DayCounts.model_fields) == ["date", *ROW_COUNTERS]


def test_rows_carry_outcomes_and_follow_the_registry() -> None:
    counted = GroupCounts("a", 10, 2, 1, 1, 0, 17, custom={"applied": 3, "deferred": 0})
    page = Page(1, [counted])
    seed_shape = rows(GroupBy.ACTION, page, EMPTY)[0]
    assert "outcomes" not in seed_shape  # without a registry: the seed documents' rows
    assert (seed_shape["positive"], seed_shape["negative"]) == (3, 1)
    applied_positive = {**SYSTEM_CLASSES, "applied": Classification.POSITIVE}
    [row] = rows(GroupBy.ACTION, page, EMPTY, applied_positive)
    assert row["outcomes"] == {
        "impression": 10,
        "click": 2,
        "dismiss": 1,
        "accept": 1,
        "applied": 3,
    }
    assert (row["positive"], row["negative"], row["neutral"]) == (6, 1, 3)
    applied_negative = {**SYSTEM_CLASSES, "applied": Classification.NEGATIVE}
    [row] = rows(GroupBy.ACTION, page, EMPTY, applied_negative)
    assert (row["positive"], row["negative"], row["neutral"]) == (3, 4, 3)
    [customer] = rows(GroupBy.CUSTOMER, page, EMPTY, applied_positive)
    assert customer["outcomes"]["applied"] == 3 and "positive" not in customer


def test_redis_payload_carries_custom_deltas_only_where_there_are_some() -> None:
    now_day = date(2026, 3, 4)
    plain = HotBucket("t", "action", Period.ALLTIME, date.min, ["a"], [[1, 0, 0, 0, 0, 1, 0]])
    custom = HotBucket(
        "t", "action", Period.ALLTIME, date.min, ["a"], [[0, 0, 0, 0, 0, 2, 0]],
        ["a", "a"], ["applied", "distinct"], [1, 1],
    )  # fmt: skip
    from datetime import UTC, datetime

    now = datetime(now_day.year, now_day.month, now_day.day, tzinfo=UTC)
    [entry] = orjson.loads(apply_payload([plain], "p", now))
    assert len(entry) == 7  # the counters, then the presence flag (key, field)
    [entry] = orjson.loads(apply_payload([custom], "p", now))
    assert entry[7] == keys.types_key("p", "t", "action", "alltime", date.min)
    assert entry[8:] == [["a", "a"], ["applied", "distinct"], [1, 1]]
    # a custom type named like a counter gets a field of its own
    assert keys.outcome_field("distinct", "a") != keys.counter_field("distinct", "a")
