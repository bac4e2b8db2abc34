"""Per-customer summary rows, period keys and history cursors, against the naive recount."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.customers import (
    BadCursor,
    CustomerEvent,
    decode_cursor,
    encode_cursor,
    period_key,
    rolling_start,
    summary_rows,
)
from core.periods import Period
from tests.recount import Event, expected_customer_summaries

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "key"),
    [
        (Period.DAILY, date(2026, 12, 1), "2026-12-01"),
        (Period.WEEKLY, date(2026, 11, 30), "2026-W49"),
        (Period.WEEKLY, date(2024, 12, 30), "2025-W01"),  # ISO year differs from the calendar's
        (Period.WEEKLY, date(2026, 12, 28), "2026-W53"),  # a 53-week ISO year
        (Period.MONTHLY, date(2026, 2, 1), "2026-02"),
        (Period.ALLTIME, date(1, 1, 1), "alltime"),
    ],
)
def test_period_keys(period: Period, start: date, key: str) -> None:
    assert period_key(period, start) == key


events_strategy = st.lists(
    st.builds(
        lambda i, seconds, action, treatment, channel, kind: CustomerEvent(
            f"e{i}", NOW - timedelta(seconds=seconds), action, treatment, channel, kind
        ),
        st.integers(0, 10_000),
        st.integers(0, 90 * 86_400),
        st.sampled_from(["a1", "a2", "a3"]),
        st.sampled_from([None, "t1", "t2"]),
        st.sampled_from([None, "web", "email"]),
        st.sampled_from(["impression", "click", "dismiss", "accept", "convert", "hover"]),
    ),
    max_size=60,
    unique_by=lambda e: e.event_id,
)


def as_recount(events: list[CustomerEvent]) -> list[Event]:
    return [
        Event(e.event_id, "t", e.ts, "C1", e.action_id, e.treatment_id, e.channel_id, e.type)
        for e in events
    ]


@settings(max_examples=200, deadline=None)
@given(events_strategy, st.sets(st.sampled_from(list(Period)), min_size=1))
def test_rows_equal_a_naive_recount(events: list[CustomerEvent], periods: set[Period]) -> None:
    want = expected_customer_summaries(
        as_recount(events), "t", "C1", tuple(p.value for p in periods)
    )
    assert summary_rows("C1", events, periods) == want


@settings(max_examples=100, deadline=None)
@given(events_strategy, st.integers(1, 100))
def test_rolling_rows_equal_a_naive_recount(events: list[CustomerEvent], days: int) -> None:
    start, end = rolling_start(days, NOW)
    inside = [e for e in events if start <= e.ts < end]
    want = expected_customer_summaries(as_recount(events), "t", "C1", days=days, now=NOW)
    assert summary_rows("C1", inside, None, (days, start, end)) == want


def test_last_contact_is_the_latest_event_ties_by_greatest_id() -> None:
    at = NOW - timedelta(hours=1)
    events = [
        CustomerEvent("b", at, "a1", None, "web", "click"),
        CustomerEvent("a", at, "a1", None, "web", "dismiss"),
        CustomerEvent("c", at - timedelta(minutes=1), "a1", None, "web", "convert"),
    ]
    [row] = summary_rows("C1", events, [Period.ALLTIME])
    assert (row["lastContactAt"], row["lastOutcomeKey"]) == ("2026-12-01T11:00:00Z", "click")
    assert (row["positive"], row["negative"], row["converts"], row["total"]) == (1, 1, 1, 3)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=128),
)
def test_cursor_round_trips(ts: datetime, event_id: str) -> None:
    assert decode_cursor(encode_cursor(ts, event_id)) == (ts, event_id)


@pytest.mark.parametrize(
    "cursor",
    ["x", "!!!", "W10", "WyJub3QgYSB0aW1lIiwgImEiXQ", "e30", encode_cursor(NOW, "a\x00b")],
)
def test_a_cursor_not_handed_out_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)
