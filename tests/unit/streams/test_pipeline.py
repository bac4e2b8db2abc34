"""split_batch: every message of a batch is either accepted or dead-lettered, never lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Interaction, Rejected, parse_event
from streams.pipeline import (
    DeadLetter,
    RawMessage,
    expired_letters,
    postgres_error_kind,
    postgres_reason,
    split_batch,
)
from streams.postgres_sink import WrittenBatch, split_expired

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)


def value(event_id: str, timestamp: object = "2026-03-01T10:00:00Z", **extra: object) -> bytes:
    doc = {
        "id": event_id,
        "timestamp": timestamp,
        "customerId": "c1",
        "actionId": "a1",
        "type": "click",
        **extra,
    }
    return json.dumps(doc).encode()


def message(
    raw: bytes | None, offset: int, partition: int = 3, record_time: datetime | None = None
) -> RawMessage:
    return RawMessage(
        key=b"c1",
        value=raw,
        topic="interactions",
        partition=partition,
        offset=offset,
        timestamp=record_time,
    )


def test_empty_batch_splits_into_nothing() -> None:
    assert split_batch([], NOW, TOLERANCE) == ([], [])


def test_mixed_batch_keeps_order_and_the_original_message_of_each_rejection() -> None:
    messages = [
        message(value("e1"), 10),
        message(b"not json", 11),  # not JSON
        message(value("e2", type="Click"), 12),  # type outside the pattern
        message(None, 13),  # tombstone
        message(value("e3"), 14),
        message(value("e4", timestamp="2026-03-01T12:05:00.001Z"), 15),  # 1 ms too far ahead
        message(value("e5", timestamp="2026-03-01T12:05:00Z"), 16),  # exactly at the limit
    ]
    accepted, rejected = split_batch(messages, NOW, TOLERANCE)
    assert [e.id for e in accepted] == ["e1", "e3", "e5"]
    assert [d.message for d in rejected] == [messages[1], messages[2], messages[3], messages[5]]
    assert [d.message.offset for d in rejected] == [11, 12, 13, 15]
    assert "not JSON" in rejected[0].reason
    assert "'type'" in rejected[1].reason
    assert "null" in rejected[2].reason
    assert "'timestamp'" in rejected[3].reason and "future" in rejected[3].reason


def test_now_and_tolerance_are_passed_through() -> None:
    raw = value("e1", timestamp="2026-03-01T12:10:00Z")
    assert split_batch([message(raw, 0)], NOW, TOLERANCE)[0] == []
    assert len(split_batch([message(raw, 0)], NOW, timedelta(minutes=10))[0]) == 1


def test_the_future_rule_follows_the_record_timestamp_not_the_workers_clock() -> None:
    """A redelivery hours later (or a worker whose clock is off) decides as the first time."""
    record_time = datetime(2026, 3, 1, 12, tzinfo=UTC)
    ahead_4_min = value("e1", timestamp="2026-03-01T12:04:00Z")
    ahead_6_min = value("e2", timestamp="2026-03-01T12:06:00Z")
    for worker_clock in (record_time - timedelta(hours=3), record_time + timedelta(days=2)):
        accepted, rejected = split_batch(
            [message(ahead_4_min, 0, record_time=record_time),
             message(ahead_6_min, 1, record_time=record_time)],
            worker_clock,
            TOLERANCE,
        )  # fmt: skip
        assert [e.id for e in accepted] == ["e1"]
        assert [d.message.offset for d in rejected] == [1]
    # without a record timestamp the worker's clock decides
    assert (
        split_batch([message(ahead_6_min, 1)], record_time + timedelta(hours=1), TOLERANCE)[1] == []
    )


def test_split_batch_leaves_duplicates_to_the_store() -> None:
    # Deduplication happens against the store; here both copies are valid events.
    accepted, rejected = split_batch(
        [message(value("e1"), 0), message(value("e1"), 1)], NOW, TOLERANCE
    )
    assert [e.id for e in accepted] == ["e1", "e1"] and rejected == []


# Raw values: valid events, near-valid ones and arbitrary bytes.
raw_values = st.one_of(
    st.none(),
    st.binary(max_size=60),
    st.builds(value, st.text(max_size=140)),
    st.builds(
        value,
        st.just("e"),
        st.integers(-(2**64), 2**64) | st.text(max_size=30) | st.booleans() | st.none(),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(raw_values, max_size=30))
def test_every_message_is_accepted_or_dead_lettered_exactly_once(
    values: list[bytes | None],
) -> None:
    messages = [message(raw, offset) for offset, raw in enumerate(values)]
    accepted, rejected = split_batch(messages, NOW, TOLERANCE)
    assert len(accepted) + len(rejected) == len(messages)
    # the same verdict as parsing each message alone, in the original order
    expected_accepted, expected_rejected = [], []
    for m in messages:
        try:
            expected_accepted.append(parse_event(m.value, NOW, TOLERANCE))
        except Rejected as exc:
            expected_rejected.append(DeadLetter(m, str(exc)))
    assert accepted == expected_accepted
    assert rejected == expected_rejected


# --- which Postgres errors heal, which an event causes, which stop the worker ----------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConnectionResetError(), "transient"),  # the connection dropped
        (TimeoutError(), "transient"),
        (asyncpg.exceptions.ConnectionDoesNotExistError(), "transient"),  # 08003
        # seen when the postmaster was SIGKILLed during a COMMIT
        (asyncpg.InternalClientError("cannot switch to state 15"), "transient"),
        (asyncpg.exceptions.SerializationError(), "transient"),  # 40001
        (asyncpg.exceptions.DeadlockDetectedError(), "transient"),  # 40P01
        (asyncpg.exceptions.TooManyConnectionsError(), "transient"),  # 53300
        (asyncpg.exceptions.AdminShutdownError(), "transient"),  # 57P01
        (asyncpg.exceptions.CannotConnectNowError(), "transient"),  # 57P03: still starting
        (asyncpg.exceptions.CheckViolationError(), "event"),  # 23514
        (asyncpg.exceptions.UniqueViolationError(), "event"),  # 23505
        (asyncpg.exceptions.CharacterNotInRepertoireError(), "event"),  # 22021: encoding
        (asyncpg.exceptions.ProgramLimitExceededError(), "event"),  # 54000: row too large
        (asyncpg.exceptions._base.DataError("invalid input for query argument $2"), "event"),
        (asyncpg.exceptions.InvalidPasswordError(), "fatal"),  # 28P01
        (asyncpg.exceptions.InvalidCatalogNameError(), "fatal"),  # 3D000: no such database
        (asyncpg.exceptions.UndefinedTableError(), "fatal"),  # 42P01
        (asyncpg.exceptions.InsufficientPrivilegeError(), "fatal"),  # 42501
        (RuntimeError("a bug"), "fatal"),
    ],
)
def test_postgres_errors_are_retried_isolated_or_fatal(error: BaseException, kind: str) -> None:
    assert postgres_error_kind(error) == kind


def test_the_reason_of_a_refused_event_carries_the_sqlstate_and_message() -> None:
    error = asyncpg.exceptions.CheckViolationError(
        'new row for relation "interaction_history" violates check constraint "c13"'
    )
    assert postgres_reason(error) == (
        'postgres refused the event (23514): new row for relation "interaction_history"'
        ' violates check constraint "c13"'
    )


# ------------------------------------------------------------- retention horizon (pure)

HORIZON = datetime(2026, 1, 1, tzinfo=UTC)


def _event(event_id: str, ts: datetime, tenant: str = "default") -> Interaction:
    return Interaction(event_id, tenant, ts, "C", "A", None, None, "click")


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(-3, 3)), max_size=40))
def test_events_older_than_the_horizon_are_split_off_and_the_rest_kept_in_order(
    draws: list[tuple[int, int]],
) -> None:
    events = [_event(f"e{i}", HORIZON + timedelta(seconds=s)) for i, s in draws]
    kept, expired = split_expired(events, HORIZON)
    assert kept == [e for e in events if e.timestamp >= HORIZON]
    assert expired == [e for e in events if e.timestamp < HORIZON]
    assert split_expired(events, None) == (events, [])


def test_every_copy_of_an_expired_event_is_dead_lettered_with_the_horizon() -> None:
    old, kept = _event("old", HORIZON - timedelta(seconds=1)), _event("kept", HORIZON)
    same_id_other_tenant = _event("old", HORIZON, tenant="acme")
    sources = [message(value(f"m{i}"), i) for i in range(4)]
    accepted = list(zip([old, kept, old, same_id_other_tenant], sources, strict=True))
    written = WrittenBatch(None, 1, 0, [], [old], HORIZON)
    letters = expired_letters(accepted, written)
    assert [letter.message for letter in letters] == [sources[0], sources[2]]
    assert letters[0].reason == (
        "older than the retention: timestamp 2025-12-31T23:59:59+00:00 is before"
        " 2026-01-01T00:00:00+00:00, the oldest instant whose buckets, history and event ids"
        " are kept"
    )
