"""Counting (docs/contract.md section 2) as the write path does it, in Postgres: the deltas it
ships to Redis and the buckets it stores must agree with the naive recount of tests/recount.py
(its own date arithmetic; core.periods is not used).

Every example runs the real statement (streams.postgres_sink.write_batch) on a real Postgres;
``now`` at the start of the calendar makes every bucket one that Redis keeps, so the returned
deltas cover all four periods."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from core.schema import COUNTERS, SYSTEM_TYPES
from streams.events import Interaction
from streams.postgres_sink import WrittenBatch, write_batch
from tests.integration.stores import postgres_buckets
from tests.recount import BucketId, Event, expected_buckets

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EVERY_BUCKET_HOT = datetime(1, 1, 1, tzinfo=UTC)
OUTCOMES = SYSTEM_TYPES

# ---------------------------------------------------------------- the naive recount

# One bucket as the recount names it: (tenant, dimension, period, start, group id).
Key = BucketId


def recount(events: list[Interaction]) -> dict[Key, dict[str, int]]:
    """Every counter of every bucket by the one naive recount (tests/recount.py), over the
    first copy of each (tenant, id)."""
    seen: set[tuple[str, str]] = set()
    firsts: list[Event] = []
    for e in events:
        if (e.tenant_id, e.id) not in seen:
            seen.add((e.tenant_id, e.id))
            firsts.append(
                Event(
                    e.id, e.tenant_id, e.timestamp.astimezone(UTC), e.customer_id, e.action_id,
                    e.treatment_id, e.channel_id, e.type,
                )
            )  # fmt: skip
    return {
        key: dict(zip(COUNTERS, row, strict=True)) for key, row in expected_buckets(firsts).items()
    }


Deltas = dict[Key, list[int]]


def as_named(deltas: Deltas) -> dict[Key, dict[str, int]]:
    return {k: dict(zip(COUNTERS, row, strict=True)) for k, row in deltas.items()}


def shipped(written: WrittenBatch) -> Deltas:
    """The deltas a committed batch hands to Redis, in the recount's shape."""
    deltas: Deltas = {}
    for b in written.buckets:
        for group, counts in zip(b.groups, b.counts, strict=True):
            deltas[(b.tenant_id, b.dimension, str(b.period), b.start, group)] = counts
    return deltas


async def _write_in_turn(dsn: str, batches: list[list[Interaction]]) -> list[WrittenBatch]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        for table in (
            "interaction_history", "event_seen", "interaction_bucket", "distinct_seen",
            "redis_outbox",
        ):  # fmt: skip
            await pool.execute(f"DELETE FROM {table}")
        # alternate shards, as batches of two workers would: a bucket is the sum of its shards
        return [
            await write_batch(pool, batch, EVERY_BUCKET_HOT, shard=i % 2)
            for i, batch in enumerate(batches)
        ]
    finally:
        await pool.close()


def write_in_turn(dsn: str, batches: list[list[Interaction]]) -> list[WrittenBatch]:
    """Each batch through the real write path, in turn, into an emptied database (every
    second batch into another shard)."""
    return asyncio.run(_write_in_turn(dsn, batches))


def added_up(written: list[WrittenBatch]) -> Deltas:
    totals: Deltas = defaultdict(lambda: [0] * len(COUNTERS))
    for batch in written:
        for key, row in shipped(batch).items():
            totals[key] = [a + b for a, b in zip(totals[key], row, strict=True)]
    return dict(totals)


@pytest.fixture
def dsn(settings: Settings) -> str:
    return settings.database_url


# ---------------------------------------------------------------- strategies

UTC_ANCHORS = [
    datetime(2025, 12, 31, 23, 59, 59, 999999),  # last instant of a year
    datetime(2026, 1, 1),  # New Year on a Thursday: the ISO week began in December
    datetime(2026, 3, 1, 23, 59, 59, 999000),  # Sunday night ...
    datetime(2026, 3, 2),  # ... and Monday morning
    datetime(2026, 12, 28),  # ISO week 53 of 2026 ...
    datetime(2027, 1, 3, 23, 59, 59),  # ... ends in 2027
    datetime(2024, 2, 29, 23, 59, 59),  # leap day
    datetime(2026, 2, 28, 23, 59, 59),  # last day of a non-leap February
    datetime(1900, 2, 28, 23, 59, 59),  # 1900 is not a leap year
    datetime(2000, 2, 29),  # 2000 is
    datetime(2026, 1, 31, 23, 59, 59),  # a 31-day month end
]
near_boundaries = st.builds(
    lambda anchor, shift: (anchor + shift).replace(tzinfo=UTC),
    st.sampled_from(UTC_ANCHORS),
    st.timedeltas(min_value=timedelta(hours=-36), max_value=timedelta(hours=36)),
)
offsets = st.builds(
    timezone, st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timedelta(minutes=m))
)
timestamps = st.one_of(
    near_boundaries,
    # the same instants written with an offset: buckets must follow UTC, not the wall clock
    st.builds(lambda ts, tz: ts.astimezone(tz), near_boundaries, offsets),
    # the ends of the calendar
    st.sampled_from(
        [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    ),
    st.datetimes(timezones=st.just(UTC)),
)
# Small pools so that ids, customers and actions collide often.
interactions = st.builds(
    Interaction,
    # the parser rejects NUL (Postgres text cannot hold it) and JSON carries no lone surrogate:
    # valid events never carry either
    id=st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6"])
    | st.text(
        st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=8,
    ),
    tenant_id=st.sampled_from(["default", "acme", "globex"]),
    timestamp=timestamps,
    customer_id=st.sampled_from(["c1", "c2", "c3"]),
    action_id=st.sampled_from(["a1", "a2", "a3"]),
    treatment_id=st.none() | st.sampled_from(["t1", "t2", "t3"]),
    channel_id=st.none() | st.sampled_from(["web", "sms"]),
    type=st.sampled_from([*OUTCOMES, "view", "hover_3s"]),
)
batches = st.lists(interactions, max_size=40)


def replays(events: list[Interaction]) -> list[Interaction]:
    """The batch with some events delivered again (Kafka is at-least-once)."""
    rng = random.Random(len(events))
    return events + rng.sample(events, k=len(events) // 2)


# ---------------------------------------------------------------- examples

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)  # a Sunday


def interaction(id_: str = "e1", **changes: object) -> Interaction:
    fields: dict[str, object] = {
        "id": id_,
        "tenant_id": "default",
        "timestamp": T0,
        "customer_id": "c1",
        "action_id": "a1",
        "treatment_id": "t1",
        "channel_id": "web",
        "type": "click",
    }
    fields.update(changes)
    return Interaction(**fields)  # type: ignore[arg-type]


def counters(
    deltas: Deltas, dimension: str, period: str, start: date, group: str, tenant: str = "default"
) -> dict[str, int] | None:
    """The named counters of one bucket, or None when the batch did not touch it."""
    return as_named(deltas).get((tenant, dimension, period, start, group))


def optimized(dsn: str, events: list[Interaction]) -> Deltas:
    """What the write path ships for one batch into an empty store."""
    return shipped(write_in_turn(dsn, [events])[0])


def test_one_event_increments_four_periods_for_each_of_its_dimensions(dsn: str) -> None:
    deltas = optimized(dsn, [interaction()])
    # 4 dimensions x 4 period types
    assert len(deltas) == 16
    for dimension, group in [("action", "a1"), ("treatment", "t1"), ("channel", "web")]:
        for period, start in [
            ("daily", date(2026, 3, 1)),
            ("weekly", date(2026, 2, 23)),
            ("monthly", date(2026, 3, 1)),
            ("alltime", date(1, 1, 1)),
        ]:
            row = counters(deltas, dimension, period, start, group)
            assert row == {**dict.fromkeys(COUNTERS, 0), "click": 1, "total": 1, "distinct": 0} | (
                {"distinct": 1} if dimension == "channel" else {}
            )
    row = counters(deltas, "customer", "daily", date(2026, 3, 1), "c1")
    assert row is not None and (row["click"], row["total"], row["distinct"]) == (1, 1, 1)


def test_duplicate_event_id_counts_once_even_with_a_different_payload(dsn: str) -> None:
    deltas = optimized(dsn, [interaction(), interaction(type="convert", action_id="a2")])
    row = counters(deltas, "action", "daily", date(2026, 3, 1), "a1")
    assert row is not None and (row["click"], row["convert"], row["total"]) == (1, 0, 1)
    assert counters(deltas, "action", "daily", date(2026, 3, 1), "a2") is None


def test_the_same_event_id_in_two_tenants_counts_in_each(dsn: str) -> None:
    deltas = optimized(dsn, [interaction(tenant_id="acme"), interaction(tenant_id="globex")])
    for tenant in ("acme", "globex"):
        row = counters(deltas, "action", "alltime", date(1, 1, 1), "a1", tenant)
        assert row is not None and row["total"] == 1


def test_unknown_type_counts_in_total_only(dsn: str) -> None:
    row = counters(optimized(dsn, [interaction(type="view")]), "action", "daily", T0.date(), "a1")
    assert row == {**dict.fromkeys(COUNTERS, 0), "total": 1}


@pytest.mark.parametrize(
    ("treatment", "channel", "dimensions", "channel_distinct"),
    [
        # neither: only action and customer buckets
        (None, None, {"action", "customer"}, None),
        # a treatment without a channel: no channel bucket, no treatment pair
        ("t1", None, {"action", "customer", "treatment"}, None),
        # a channel without a treatment: the channel counts, its treatmentCount does not
        (None, "web", {"action", "customer", "channel"}, 0),
        # both: the channel's treatmentCount is 1
        ("t1", "web", {"action", "customer", "treatment", "channel"}, 1),
    ],
)
def test_optional_dimensions_only_count_when_present(
    dsn: str,
    treatment: str | None,
    channel: str | None,
    dimensions: set[str],
    channel_distinct: int | None,
) -> None:
    deltas = optimized(dsn, [interaction(treatment_id=treatment, channel_id=channel)])
    assert {k[1] for k in deltas} == dimensions
    row = counters(deltas, "channel", "daily", T0.date(), "web")
    assert (row["distinct"] if row else None) == channel_distinct


def test_unique_actions_and_treatment_count_are_distinct_per_bucket(dsn: str) -> None:
    events = [
        interaction("e1", action_id="a1", treatment_id="t1"),
        interaction("e2", action_id="a1", treatment_id="t1"),
        interaction("e3", action_id="a2", treatment_id="t2"),
        # next day (Monday, a new ISO week): same month, new day and week buckets
        interaction("e4", action_id="a3", treatment_id="t3", timestamp=T0 + timedelta(days=1)),
    ]
    deltas = optimized(dsn, events)
    buckets = [("daily", T0.date()), ("weekly", date(2026, 2, 23)), ("monthly", date(2026, 3, 1))]
    distinct = {}
    for dimension, group in [("customer", "c1"), ("channel", "web")]:
        for period, start in buckets:
            row = counters(deltas, dimension, period, start, group)
            assert row is not None
            distinct[(dimension, period)] = row["distinct"]
    assert distinct == {
        ("customer", "daily"): 2,
        ("customer", "weekly"): 2,
        ("customer", "monthly"): 3,
        ("channel", "daily"): 2,
        ("channel", "weekly"): 2,
        ("channel", "monthly"): 3,
    }


def test_pairs_the_store_already_has_add_nothing_to_distinct(dsn: str) -> None:
    first, again = write_in_turn(
        dsn, [[interaction("e1")], [interaction("e2", timestamp=T0 + timedelta(hours=1))]]
    )
    distinct = COUNTERS.index("distinct")
    has_items = {"customer", "channel"}
    assert {k: row[distinct] for k, row in shipped(first).items()} == {
        k: int(k[1] in has_items) for k in shipped(first)
    }
    # the same customer/action and channel/treatment an hour later: new events, no new items
    assert {
        k: (row[distinct], row[COUNTERS.index("total")]) for k, row in shipped(again).items()
    } == {k: (0, 1) for k in shipped(again)}


@pytest.mark.parametrize(
    ("ts", "weekly", "monthly"),
    [
        # Sunday of ISO week 53 lies in January: January's month, December's week
        (datetime(2027, 1, 3, 23, 59, tzinfo=UTC), date(2026, 12, 28), date(2027, 1, 1)),
        # 00:30+01:00 on New Year's Day is still December in UTC
        (
            datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            date(2025, 12, 29),
            date(2025, 12, 1),
        ),
    ],
)
def test_buckets_follow_the_utc_calendar(
    dsn: str, ts: datetime, weekly: date, monthly: date
) -> None:
    periods = {(k[2], k[3]) for k in optimized(dsn, [interaction(timestamp=ts)])}
    assert ("weekly", weekly) in periods
    assert ("monthly", monthly) in periods


# ---------------------------------------------------------------- properties


@PROPERTY
@given(events=batches)
def test_batch_deltas_agree_with_a_naive_recount(dsn: str, events: list[Interaction]) -> None:
    events = replays(events)
    assert as_named(optimized(dsn, events)) == recount(events)


@PROPERTY
@given(batch_list=st.lists(batches, max_size=5))
def test_batches_written_in_turn_add_up_to_the_recount_in_redis_and_postgres(
    dsn: str, batch_list: list[list[Interaction]]
) -> None:
    """Only events and distinct pairs new to the store count, whichever batch brings them."""
    written = write_in_turn(dsn, batch_list)
    everything = recount([e for batch in batch_list for e in batch])
    assert as_named(added_up(written)) == everything
    stored = asyncio.run(postgres_buckets(dsn))
    assert as_named({k: list(v) for k, v in stored.items()}) == {
        (t, d, p, date.min if p == "alltime" else s, g): c
        for (t, d, p, s, g), c in everything.items()
    }


@PROPERTY
@given(events=batches)
def test_every_delta_row_is_non_negative_and_total_bounds_the_outcomes(
    dsn: str, events: list[Interaction]
) -> None:
    for row in optimized(dsn, events).values():
        named = dict(zip(COUNTERS, row, strict=True))
        assert all(v >= 0 for v in row)
        assert sum(named[o] for o in OUTCOMES) <= named["total"]
