"""When a partition's log went backwards (streams/positions.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.positions import went_backwards


@pytest.mark.parametrize(
    ("log_end", "committed", "last_read", "backwards"),
    [
        (None, 300, 299, False),  # nothing fetched yet: no end known
        (-1, 300, 299, False),  # the client's "unknown"
        (300, 300, 299, False),  # caught up
        (350, 300, 320, False),  # behind: more to read
        (0, None, None, False),  # a new, empty partition
        (0, 300, 299, True),  # the log is gone: empty now
        (100, 300, 299, True),  # a shorter new log
        (299, None, 299, True),  # nothing committed yet, but read further than the end
        (300, None, 299, False),
    ],
)
def test_a_log_ending_below_where_we_were_went_backwards(
    log_end: int | None, committed: int | None, last_read: int | None, backwards: bool
) -> None:
    assert went_backwards(log_end, committed, last_read) is backwards


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_a_log_that_only_grew_never_went_backwards(
    committed: int, read_more: int, grew: int
) -> None:
    """In a healthy log the committed offset and the last read one are below its end."""
    last_read = committed + read_more
    assert not went_backwards(last_read + 1 + grew, committed, last_read)
