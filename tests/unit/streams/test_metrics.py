"""Metric labels are bounded: a dead letter's reason or a retry's cause maps to a short
label from a fixed family, whatever the message held."""

from __future__ import annotations

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.mirror import epoch_number
from streams.metrics import reason_label, retry_cause
from streams.pipeline import postgres_reason


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("empty message: the value is null", "empty"),
        ("not JSON: unexpected character: line 1 column 1 (char 0)", "not_json"),
        ("not a JSON object: got list", "not_object"),
        (
            "field 'timestamp' 2030-01-01T00:00:00+00:00 is more than 300s in the future",
            "field_timestamp",
        ),
        ("field 'customerId' is required", "field_customerId"),
        ("postgres refused the event (23514): new row violates check constraint", "postgres_23514"),
        ("something nobody wrote yet", "other"),
    ],
)
def test_each_reason_has_its_label(reason: str, label: str) -> None:
    assert reason_label(reason) == label


@given(st.text(max_size=300))
def test_any_reason_gets_a_short_label(reason: str) -> None:
    label = reason_label(reason)
    assert len(label) <= 40 and label.replace("_", "").isalnum()


def test_the_postgres_reason_and_its_label_agree() -> None:
    exc = asyncpg.CheckViolationError("new row violates check constraint")
    assert reason_label(postgres_reason(exc)).startswith("postgres_")


def test_a_retry_cause_is_the_sqlstate_or_the_class() -> None:
    assert retry_cause(asyncpg.DeadlockDetectedError("deadlock")) == "40P01"
    assert retry_cause(ConnectionRefusedError()) == "ConnectionRefusedError"


@pytest.mark.parametrize(
    ("epoch", "number"), [("", 0), ("1:ab12", 1), ("42:ffee0011", 42), ("junk", 0)]
)
def test_the_epoch_number_is_its_resync_counter(epoch: str, number: int) -> None:
    assert epoch_number(epoch) == number
