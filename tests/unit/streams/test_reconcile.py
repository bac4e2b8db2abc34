"""The reconciliation's comparison (streams/reconcile.py): what Redis must hold given what
Postgres holds and which outbox batches Redis has applied."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core import keys
from streams.reconcile import PendingBatch, mismatched_groups

WIDTH = len(keys.COUNTERS)
counts = st.lists(st.integers(0, 50), min_size=WIDTH, max_size=WIDTH).map(tuple)
GROUPS = ("g1", "g2", "g3")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict, list[PendingBatch], set[int]]:
    """Postgres counts = applied base + every pending batch; some batches applied in Redis."""
    base = {g: draw(counts) for g in GROUPS}
    batches = []
    for batch_id in range(draw(st.integers(0, 4))):
        groups = draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=3, unique=True))
        batches.append(PendingBatch(batch_id, groups, [draw(counts) for _ in groups]))
    applied = {b.batch_id for b in batches if draw(st.booleans())}
    return base, batches, applied


def _plus(*rows: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sum(column) for column in zip(*rows, strict=True))


def _stores(base: dict, batches: list[PendingBatch], applied: set[int]) -> tuple[dict, dict]:
    postgres = dict(base)
    redis = dict(base)
    for batch in batches:
        for group, deltas in zip(batch.groups, batch.counts, strict=True):
            postgres[group] = _plus(postgres[group], deltas)
            if batch.batch_id in applied:
                redis[group] = _plus(redis[group], deltas)
    return postgres, redis


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_redis_holding_every_applied_batch_matches(scenario: tuple) -> None:
    base, batches, applied = scenario
    postgres, redis = _stores(base, batches, applied)
    assert mismatched_groups(postgres, batches, applied, redis, redis_moved=False) == []
    assert mismatched_groups(postgres, batches, applied, redis, redis_moved=True) == []


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.sampled_from(GROUPS), st.integers(0, WIDTH - 1))
def test_a_redis_missing_counts_is_caught_whether_or_not_redis_moved(
    scenario: tuple, group: str, counter: int
) -> None:
    base, batches, applied = scenario
    postgres, redis = _stores(base, batches, applied)
    row = list(redis[group])
    row[counter] -= 1  # one count lost (an old snapshot, an evicted key)
    redis[group] = tuple(row)
    for moved in (False, True):
        assert mismatched_groups(postgres, batches, applied, redis, moved) == [group]


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.sampled_from(GROUPS), counts.filter(any))
def test_more_in_redis_is_wrong_only_while_redis_applied_nothing_since(
    scenario: tuple, group: str, newer: tuple[int, ...]
) -> None:
    """A batch committed after the Postgres read and applied since adds to Redis only."""
    base, batches, applied = scenario
    postgres, redis = _stores(base, batches, applied)
    redis[group] = _plus(redis[group], newer)
    assert mismatched_groups(postgres, batches, applied, redis, redis_moved=True) == []
    assert mismatched_groups(postgres, batches, applied, redis, redis_moved=False) == [group]


def test_a_group_redis_does_not_have_is_a_mismatch() -> None:
    postgres = {"g1": (1, 0, 0, 0, 0, 1, 0)}
    assert mismatched_groups(postgres, [], set(), {}, redis_moved=True) == ["g1"]
