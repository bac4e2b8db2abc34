"""Retention (docs/contract.md section 6, issue 13 item 7): a run drops exactly the history
partitions, fence rows, daily buckets and distinct tags older than its horizons; what is kept
stays exact; an id within retention published again is still counted once; an event older
than the horizon is dead-lettered, not counted.

The expectations are computed here with the test's own calendar arithmetic (first of the
month, Monday of the week), not with core/retention.py. The database is fresh, so its legacy
partition ends at the first of next month: the events are stamped in the six months after
it (written straight through the write statement, no parser, no clock) and the runs are
given a ``now`` in that future.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
from redis.asyncio import Redis

from core.config import Settings
from core.distinct import bucket_of
from streams.events import Interaction
from streams.pipeline import BatchProcessor, DeadLetter, RawMessage
from streams.postgres_sink import write_batch
from streams.redis_sink import RedisSink
from streams.retention import history_partitions, run_retention
from tests.integration.credentials import make_keys
from tests.integration.stores import postgres_buckets
from tests.recount import BucketId, Event, expected_buckets

TYPES = ("impression", "impression", "click", "convert", "dismiss", "hover")
HISTORY_DAYS, BUCKET_DAYS, DISTINCT_DAYS = 100, 80, 90
STORED = ("daily", "alltime")


def _first_of_next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _events(first: datetime, days: int, count: int, seed: int, prefix: str) -> list[Interaction]:
    rng = random.Random(seed)
    return [
        Interaction(
            id=f"{prefix}{i:05d}",
            tenant_id=rng.choice(("default", "acme")),
            timestamp=first + timedelta(seconds=rng.randint(0, days * 86_400 - 1)),
            customer_id=f"C-{rng.randint(1, 30):02d}",
            action_id=f"act-{rng.randint(1, 8)}",
            treatment_id=rng.choice((None, *(f"tr-{n}" for n in range(1, 7)))),
            channel_id=rng.choice((None, "email", "web", "push")),
            type=rng.choice(TYPES),
        )
        for i in range(count)
    ]


def _recount(events: list[Interaction]) -> list[Event]:
    return [
        Event(e.id, e.tenant_id, e.timestamp, e.customer_id, e.action_id, e.treatment_id,
              e.channel_id, e.type)
        for e in events
    ]  # fmt: skip


def _stored(buckets: dict[BucketId, Any], daily_from: date) -> dict[BucketId, Any]:
    """The daily buckets from ``daily_from`` and every all-time bucket."""
    return {
        k: v
        for k, v in buckets.items()
        if k[2] == "alltime" or (k[2] == "daily" and k[3] >= daily_from)
    }


def _kept_tags(events: list[Interaction], day: date) -> set[tuple[str, str, str, str, str, date]]:
    """(tenant, dimension, group, item, period, start) of every bucket a pair was seen in and
    that ends after ``day``."""
    found = set()
    for e in events:
        d = e.timestamp.astimezone(UTC).date()
        starts = {
            "daily": d,
            "weekly": d - timedelta(days=d.weekday()),
            "monthly": d.replace(day=1),
        }
        ends = {
            "daily": d + timedelta(days=1),
            "weekly": starts["weekly"] + timedelta(days=7),
            "monthly": _first_of_next_month(d),
        }
        pairs = [("customer", e.customer_id, e.action_id)]
        if e.channel_id is not None and e.treatment_id is not None:
            pairs.append(("channel", e.channel_id, e.treatment_id))
        for dimension, group, item in pairs:
            for period, start in starts.items():
                if ends[period] > day:
                    found.add((e.tenant_id, dimension, group, item, period, start))
    return found


async def _tags(conn: asyncpg.Connection) -> set[tuple[str, str, str, str, str, date]]:
    rows = await conn.fetch(
        "SELECT tenant_id, dimension, group_id, item_id, tags FROM distinct_seen"
    )
    found = set()
    for r in rows:
        for value in r["tags"]:
            period, start = bucket_of(value)
            found.add((r[0], r[1], r[2], r[3], str(period), start))
    return found


async def test_retention_drops_exactly_what_is_older_and_what_is_kept_stays_exact(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    conn: asyncpg.Connection
    async with pool.acquire() as conn:
        [legacy] = [p for p in await history_partitions(conn) if p.until is not None]
    assert legacy.until is not None
    start = legacy.until  # first of next month, UTC midnight
    events = _events(start, 180, 3000, seed=71, prefix="a")
    for i in range(0, len(events), 500):
        await write_batch(pool, events[i : i + 500], start)
    everything = expected_buckets(_recount(events))
    assert await postgres_buckets(settings.database_url) == everything

    # A run that keeps everything creates the months (moving the rows the default partition
    # took) and drops nothing.
    now = start + timedelta(days=190)
    async with pool.acquire() as conn:
        kept_all = await run_retention(conn, now, 0, 0, 0)
        assert kept_all is not None and not kept_all.partitions_dropped
        assert len(kept_all.partitions_created) >= 7
        assert await conn.fetchval("SELECT count(*) FROM interaction_history_default") == 0
        assert await conn.fetchval("SELECT count(*) FROM interaction_history") == len(events)
    assert await postgres_buckets(settings.database_url) == everything

    async with pool.acquire() as conn:
        run = await run_retention(conn, now, HISTORY_DAYS, BUCKET_DAYS, DISTINCT_DAYS)
        assert run is not None
        today = now.date()
        history_cut = today - timedelta(days=HISTORY_DAYS)
        history_from = history_cut.replace(day=1)  # the month holding the cutoff is kept
        bucket_cut = today - timedelta(days=BUCKET_DAYS)
        distinct_cut = today - timedelta(days=DISTINCT_DAYS)
        dropped_months = set()
        m = start.date()
        while m < history_from:
            dropped_months.add(f"interaction_history_p{m:%Y%m}")
            m = _first_of_next_month(m)
        assert set(run.partitions_dropped) == dropped_months | {legacy.name}
        assert run.horizons.history_from == datetime.combine(history_from, datetime.min.time(), UTC)
        assert (run.horizons.buckets_from, run.horizons.distinct_from) == (bucket_cut, distinct_cut)

        kept_history = sorted(
            (e.tenant_id, e.id) for e in events if e.timestamp.date() >= history_from
        )
        history = await conn.fetch("SELECT tenant_id, event_id FROM interaction_history")
        fence = await conn.fetch("SELECT tenant_id, event_id FROM event_seen")
        assert sorted(map(tuple, history)) == kept_history
        assert sorted(map(tuple, fence)) == kept_history
        assert run.fence_rows_deleted == len(events) - len(kept_history)
        assert 0 < len(kept_history) < len(events)
        assert await _tags(conn) == _kept_tags(events, distinct_cut)
        # pairs seen only before the cutoff keep their row, with no tags: the all-time
        # distinct counts stay exact when such a pair comes back
        pairs = {(e.tenant_id, "customer", e.customer_id, e.action_id) for e in events}
        pairs |= {
            (e.tenant_id, "channel", e.channel_id, e.treatment_id)
            for e in events
            if e.channel_id is not None and e.treatment_id is not None
        }
        rows = await conn.fetch("SELECT tenant_id, dimension, group_id, item_id FROM distinct_seen")
        assert set(map(tuple, rows)) == pairs
        events_from = await conn.fetchval("SELECT events_from FROM retention_horizon")
    assert events_from == datetime.combine(
        max(history_from, bucket_cut, distinct_cut), datetime.min.time(), UTC
    )
    after = {
        k: v for k, v in (await postgres_buckets(settings.database_url)).items() if k[2] in STORED
    }
    assert after == _stored(everything, bucket_cut)  # all-time buckets stay whole
    assert any(k[2] == "daily" and k[3] < bucket_cut for k in everything)  # something went

    # Published again: kept ids are duplicates, ids older than the horizon are refused (not
    # counted again: their fence rows may be gone), new ids in retention are counted.
    again = [e for e in events if e.timestamp >= events_from][:300]
    too_old = [e for e in events if e.timestamp < events_from][:200]
    new = _events(events_from, 60, 400, seed=72, prefix="b")
    written = await write_batch(pool, again + too_old + new, now)
    assert (written.new_events, written.duplicates) == (len(new), len(again))
    assert sorted(e.id for e in written.expired) == sorted(e.id for e in too_old)
    grown = expected_buckets(_recount(events + new))
    after = {
        k: v for k, v in (await postgres_buckets(settings.database_url)).items() if k[2] in STORED
    }
    assert after == _stored(grown, bucket_cut)

    # A second run at the same instant finds nothing more to drop.
    async with pool.acquire() as conn:
        rerun = await run_retention(conn, now, HISTORY_DAYS, BUCKET_DAYS, DISTINCT_DAYS)
    assert rerun is not None and rerun.horizons == run.horizons
    assert (rerun.partitions_dropped, rerun.fence_rows_deleted, rerun.buckets_deleted) == ([], 0, 0)


async def test_an_event_older_than_the_horizon_is_dead_lettered_and_the_rest_counted(
    settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE retention_horizon SET history_from = $1, events_from = $1",
            datetime(2026, 1, 1, tzinfo=UTC),
        )
    letters: list[DeadLetter] = []

    async def send(batch: Any) -> None:
        letters.extend(batch)

    processor = BatchProcessor(
        pool, RedisSink(redis, settings.redis_prefix), send, timedelta(minutes=5)
    )

    def message(i: int, ts: str) -> RawMessage:
        doc = {"id": f"m{i}", "timestamp": ts, "customerId": "C", "actionId": "A", "type": "click"}
        return RawMessage(b"C", orjson.dumps(doc), "interactions", 0, i, None)

    old = [message(i, "2025-12-31T23:59:59Z") for i in range(3)]
    kept = [message(i, "2026-01-01T00:00:00Z") for i in range(3, 8)]
    await processor.commit([*old, *kept, old[0]])
    assert [letter.message for letter in letters] == [*old, old[0]]
    assert all(letter.reason.startswith("older than the retention") for letter in letters)
    async with pool.acquire() as conn:
        counted = await conn.fetchval(
            "SELECT total FROM interaction_bucket WHERE period = 'alltime' AND dimension = 'action'"
        )
        assert counted == len(kept)
        assert await conn.fetchval("SELECT count(*) FROM event_seen") == len(kept)


async def test_a_rolling_window_older_than_the_kept_days_is_refused_not_summed_partially(
    settings: Settings, start_api
) -> None:
    today = datetime.now(UTC).date()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "UPDATE retention_horizon SET buckets_from = $1, distinct_from = $2",
            today - timedelta(days=50),
            today - timedelta(days=40),
        )
    finally:
        await conn.close()
    keys = await make_keys(settings.database_url)
    api = await start_api(settings)
    headers = {"Authorization": f"Bearer {keys['viewer:default']}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as client:
        # the last 41 days are kept (distinct tags from 40 days back); the current period of
        # any length always is (all-time buckets are never dropped)
        for days, window, status in (
            (41, "rolling", 200),
            (42, "rolling", 422),
            (36500, "rolling", 422),
            (90, "period", 200),
            (7, "rolling", 200),
        ):
            answer = await client.get(
                "/api/v1/interaction-summary", params={"days": days, "window": window}
            )
            assert answer.status_code == status, (days, window, answer.text)
        refused = await client.get(
            "/api/v1/interaction-summary", params={"days": 42, "window": "rolling"}
        )
        error = refused.json()["error"]
        assert error["code"] == "OUTSIDE_RETENTION"
        assert (today - timedelta(days=40)).isoformat() in error["message"]
        assert "at most 41 days" in error["message"]
        series = await client.get("/api/v1/interaction-timeseries", params={"days": 60})
        assert series.status_code == 422 and series.json()["error"]["code"] == "OUTSIDE_RETENTION"
        assert (await client.get("/api/v1/interaction-timeseries", params={"days": 30})).is_success
