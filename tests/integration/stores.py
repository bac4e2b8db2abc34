"""Read back everything the service stored, in the recount's shape, for exact comparisons."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis

from core.config import Settings
from core.distinct import bucket_of
from core.hot import redis_expiry
from core.keys import OUTCOME_FIELD_PREFIX
from core.periods import Period
from core.schema import COUNTER_COLUMNS, COUNTERS
from tests.recount import BucketId
from tests.support import wait_until

_WIDTH = len(COUNTERS)


async def postgres_buckets(dsn: str) -> dict[BucketId, tuple[int, ...]]:
    """Every bucket as Postgres answers it: daily and all-time rows as stored, weekly and
    monthly ones summed from their days here (with the test's own calendar), their distinct
    counts from the pairs' tags."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tenant_id, dimension, period, bucket_start, group_id,"
            f" {', '.join(COUNTER_COLUMNS.values())} FROM interaction_bucket"
        )
        pairs = await conn.fetch("SELECT tenant_id, dimension, group_id, tags FROM distinct_seen")
    finally:
        await conn.close()
    found: dict[BucketId, tuple[int, ...]] = {}
    for r in rows:  # a bucket is the sum of its shards
        key = (r[0], r[1], r[2], r[3], r[4])
        before = found.get(key, (0,) * _WIDTH)
        found[key] = tuple(a + b for a, b in zip(before, r[5:], strict=True))
    summed: dict[BucketId, list[int]] = {}
    for (tenant, dimension, period, day, group), counts in list(found.items()):
        if period != "daily":
            continue
        monday = day - timedelta(days=day.weekday())
        for bigger, start in (("weekly", monday), ("monthly", day.replace(day=1))):
            row = summed.setdefault((tenant, dimension, bigger, start, group), [0] * _WIDTH)
            for i in range(_WIDTH - 1):  # every counter but distinct, which is not a sum
                row[i] += counts[i]
    for tenant, dimension, group, tags in pairs:
        for value in tags:
            period, start = bucket_of(value)
            key = (tenant, dimension, str(period), start, group)
            if key in summed:
                summed[key][_WIDTH - 1] += 1
    found.update({k: tuple(v) for k, v in summed.items()})
    return found


async def history_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM interaction_history"))
    finally:
        await conn.close()


async def _count_hashes(
    redis: Redis, prefix: str
) -> AsyncIterator[tuple[str, tuple[str, str, str, str]]]:
    """Every bucket's counts hash: its key and (tenant, dimension, period, start)."""
    pattern = re.compile(
        rf"^{re.escape(prefix)}:cnt:\{{(.*)\}}:(\w+):(\w+):(\d{{4}}-\d{{2}}-\d{{2}})$"
    )
    async for raw in redis.scan_iter(match=f"{prefix}:cnt:*", count=1000):
        key = raw.decode()
        match = pattern.match(key)
        assert match, f"unexpected key {key}"
        tenant, dimension, period, start = match.groups()
        yield key, (tenant, dimension, period, start)


async def redis_buckets(redis_url: str, prefix: str) -> dict[BucketId, tuple[int, ...]]:
    """Every bucket in Redis; also checks each rank score equals minus the bucket's total."""
    found: dict[BucketId, list[int]] = {}
    redis = Redis.from_url(redis_url)
    try:
        async for key, (tenant, dimension, period, start) in _count_hashes(redis, prefix):
            rank = key.replace(f"{prefix}:cnt:", f"{prefix}:rank:", 1)
            async with redis.pipeline(transaction=True) as pipe:  # one instant for both keys
                pipe.hgetall(key)
                pipe.zrange(rank, 0, -1, withscores=True)
                fields, ranking = await pipe.execute()
            in_bucket: dict[str, list[int]] = {}
            for field, value in fields.items():
                if field.startswith(OUTCOME_FIELD_PREFIX.encode()):
                    continue  # a custom type's count: see redis_outcomes
                counter, _, group = field.decode().partition(":")
                if counter == "present":  # presence flags of the action hash (core/keys.py)
                    continue
                row = in_bucket.setdefault(group, [0] * len(COUNTERS))
                row[COUNTERS.index(counter)] = int(value)
            # the total is the rank's score; every group with counts in the hash is ranked
            scores = {m.decode(): s for m, s in ranking}
            assert set(in_bucket) <= set(scores), f"ranking of {rank}"
            for group, score in scores.items():
                row = in_bucket.setdefault(group, [0] * len(COUNTERS))
                row[COUNTERS.index("total")] = int(-score)
            for group, counts in in_bucket.items():
                found[(tenant, dimension, period, date.fromisoformat(start), group)] = counts
    finally:
        await redis.aclose()
    return {k: tuple(v) for k, v in found.items()}


async def postgres_outcomes(dsn: str) -> dict[tuple[BucketId, str], int]:
    """Every bucket's custom-type counts as Postgres answers them (shards summed, weekly and
    monthly summed from days here), in the shape of tests.recount.expected_outcomes."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tenant_id, dimension, period, bucket_start, group_id, type, count"
            " FROM interaction_bucket_outcome"
        )
    finally:
        await conn.close()
    found: dict[tuple[BucketId, str], int] = {}
    for tenant, dimension, period, day, group, type_, n in rows:
        keys = [(period, day)]
        if period == "daily":
            keys += [
                ("weekly", day - timedelta(days=day.weekday())),
                ("monthly", day.replace(day=1)),
            ]
        for p, start in keys:
            key = ((tenant, dimension, p, start, group), type_)
            found[key] = found.get(key, 0) + n
    return {k: v for k, v in found.items() if v}


async def redis_outcomes(redis_url: str, prefix: str) -> dict[tuple[BucketId, str], int]:
    """Every bucket's custom-type counts in Redis; each type is in its bucket's types set."""
    found: dict[tuple[BucketId, str], int] = {}
    redis = Redis.from_url(redis_url)
    try:
        async for key, (tenant, dimension, period, start) in _count_hashes(redis, prefix):
            types_key = key.replace(f"{prefix}:cnt:", f"{prefix}:types:", 1)
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.smembers(types_key)
                fields, types = await pipe.execute()
            for field, value in fields.items():
                name = field.decode()
                if not name.startswith(OUTCOME_FIELD_PREFIX) or not int(value):
                    continue
                type_, _, group = name[len(OUTCOME_FIELD_PREFIX) :].partition(":")
                assert type_.encode() in types, f"{type_} missing from {types_key}"
                bucket = (tenant, dimension, period, date.fromisoformat(start), group)
                found[(bucket, type_)] = int(value)
    finally:
        await redis.aclose()
    return found


def kept_in_redis(buckets: dict[BucketId, Any], now: datetime | None = None) -> dict[BucketId, Any]:
    """The buckets Redis is meant to hold at ``now`` (the hot ones; see core.hot.REDIS_GRACE)."""
    now = now or datetime.now(UTC)
    kept = {}
    for key, value in buckets.items():
        expires = redis_expiry(Period(key[2]), key[3])
        if expires is None or expires > now:
            kept[key] = value
    return kept


async def wait_for_exact_stores(
    settings: Settings, expected: dict, distinct: int, timeout: float = 180
) -> None:
    """Wait until both stores hold exactly ``expected``; fail with a readable difference."""

    async def history_complete() -> bool:
        return await history_count(settings.database_url) >= distinct

    await wait_until(
        history_complete, timeout, interval=0.5, message="history never reached the distinct count"
    )
    assert await history_count(settings.database_url) == distinct
    assert await postgres_buckets(settings.database_url) == expected
    hot = kept_in_redis(expected)

    async def redis_exact() -> bool:
        return await redis_buckets(settings.redis_url, settings.redis_prefix) == hot

    await wait_until(redis_exact, 60, interval=0.5, message="redis never matched the recount")
