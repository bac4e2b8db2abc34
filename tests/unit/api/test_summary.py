"""The derived fields reproduce every number in the seed API documents (shared/spec)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.catalog import Catalog
from api.rows import action_row, channel_row, customer_row, rate, treatment_row
from api.summary import GroupCounts, Page

EMPTY = Catalog()


def counts(
    impression: int,
    click: int,
    dismiss: int,
    accept: int,
    convert: int,
    total: int,
    distinct: int = 0,
) -> GroupCounts:
    return GroupCounts("x", impression, click, dismiss, accept, convert, total, distinct)


def test_seed_action_row_numbers() -> None:
    row = action_row(counts(1250, 87, 45, 0, 32, 1414), EMPTY)
    assert (row["ctr"], row["cvr"]) == (6.96, 2.56)
    assert (row["positive"], row["negative"], row["neutral"]) == (87, 45, 1118)
    assert row["total"] == 1414


def test_seed_treatment_row_numbers() -> None:
    row = treatment_row(counts(625, 52, 20, 0, 18, 715), EMPTY)
    assert (row["ctr"], row["cvr"]) == (8.32, 2.88)


def test_seed_channel_row_numbers() -> None:
    row = channel_row(counts(2500, 175, 90, 0, 0, 2765, distinct=6), EMPTY)
    assert row["ctr"] == 7.0
    assert row["treatmentCount"] == 6
    assert "cvr" not in row


def test_seed_customer_row_fields() -> None:
    row = customer_row(GroupCounts("C-1234", 20, 8, 4, 0, 3, 42, 5), EMPTY)
    assert row == {
        "customerId": "C-1234",
        "total": 42,
        "impression": 20,
        "click": 8,
        "dismiss": 4,
        "accept": 0,
        "convert": 3,
        "uniqueActions": 5,
    }


def test_unknown_ids_get_null_metadata() -> None:
    row = treatment_row(counts(1, 0, 0, 0, 0, 1), EMPTY)
    for field in (
        "name",
        "offerName",
        "channelType",
        "channelName",
        "templateType",
        "abTestVariant",
        "weight",
        "status",
    ):
        assert row[field] is None


@pytest.mark.parametrize(
    ("numerator", "impressions", "expected"),
    [
        (0, 0, 0.0),  # no impressions: 0, not a division error
        (5, 0, 0.0),  # clicks without impressions still 0
        (1, 800, 0.13),  # 0.125 rounds half-up (a binary float round() would give 0.12)
        (1, 3, 33.33),
        (2, 3, 66.67),
        (3, 2, 150.0),  # more clicks than impressions is reported as is
    ],
)
def test_rate_rounds_half_up_to_two_decimals(
    numerator: int, impressions: int, expected: float
) -> None:
    assert rate(numerator, impressions) == expected


@given(st.integers(0, 10**9), st.integers(1, 10**9))
def test_rate_is_within_half_a_cent_of_the_exact_ratio(numerator: int, impressions: int) -> None:
    exact = 100 * numerator / impressions
    assert abs(rate(numerator, impressions) - exact) <= 0.005 + 1e-9 * max(1.0, exact)


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_sentiment_parts_never_negative(
    impression: int, click: int, dismiss: int, accept: int
) -> None:
    row = action_row(
        counts(impression, click, dismiss, accept, 0, impression + click + dismiss + accept), EMPTY
    )
    assert row["positive"] == click + accept
    assert row["negative"] == dismiss
    assert row["neutral"] == max(impression - click - accept - dismiss, 0)


def test_page_rows_keep_store_order() -> None:
    from api.rows import rows
    from api.summary import GroupBy

    page = Page(2, [GroupCounts("b", 1, 0, 0, 0, 0, 5), GroupCounts("a", 1, 0, 0, 0, 0, 5)])
    assert [r["id"] for r in rows(GroupBy.ACTION, page, EMPTY)] == ["b", "a"]
