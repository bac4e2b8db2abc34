"""Per-customer period keys and history cursors (the summary rows Postgres builds are
tested against the naive recount in tests/integration/test_customer_sql.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.customers import (
    BadCursor,
    decode_cursor,
    encode_cursor,
    period_key,
)
from core.periods import Period

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
