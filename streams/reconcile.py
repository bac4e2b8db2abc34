"""Compares a sample of current buckets between Redis and Postgres (issue 13, item 4).

The epoch and the applied-batch count (core/mirror.py) show a Redis that lost whole batches;
this catches what they cannot (keys evicted or changed by hand). Each round picks one hot
bucket Postgres stores (a kept day or all time) of a random tenant and dimension, and up to
``groups`` of its groups from a random point, and compares every counter. Batches still in
the outbox are allowed for: their deltas count as expected in Redis only where Redis holds
their marker. Batches committed after the Postgres read can only add to Redis, so Redis may
exceed the expectation while Redis applied batches meanwhile (its applied count moved), and
must equal it otherwise.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from core import keys
from core.hot import oldest_kept_starts
from core.mirror import mirror_state
from core.periods import ALLTIME_START, Period
from core.schema import COUNTER_COLUMNS, COUNTERS

log = logging.getLogger(__name__)

Counts = tuple[int, ...]  # in COUNTERS order

_COLUMNS = [COUNTER_COLUMNS[c] for c in COUNTERS]
_TENANTS = """
WITH RECURSIVE t AS (
    (SELECT tenant_id FROM interaction_bucket ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT b.tenant_id FROM interaction_bucket AS b WHERE b.tenant_id > t.tenant_id
            ORDER BY b.tenant_id LIMIT 1)
    FROM t WHERE t.tenant_id IS NOT NULL
)
SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL LIMIT 1000
"""
_GROUPS = f"""
SELECT group_id, {", ".join(f"sum({c})::int8" for c in _COLUMNS)}
FROM interaction_bucket
WHERE tenant_id = $1 AND dimension = $2 AND period = $3 AND bucket_start = $4
  AND group_id >= $5
GROUP BY group_id ORDER BY group_id LIMIT $6
"""
_PENDING = """
SELECT batch_id, groups, counts FROM redis_outbox
WHERE tenant_id = $1 AND dimension = $2 AND period = $3 AND bucket_start = $4
"""
DIMENSIONS = ("action", "treatment", "channel", "customer")


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """An outbox batch's deltas for the sampled bucket: ``counts[i]`` of ``groups[i]``."""

    batch_id: int
    groups: Sequence[str]
    counts: Sequence[Sequence[int]]


def mismatched_groups(
    postgres: Mapping[str, Counts],
    pending: Sequence[PendingBatch],
    applied: set[int],
    redis: Mapping[str, Counts],
    redis_moved: bool,
) -> list[str]:
    """Groups of ``postgres`` whose Redis counters are not what Postgres implies (pure).

    Expected in Redis: Postgres's counts minus the deltas of pending batches Redis has not
    applied (no marker). Equal, unless Redis applied batches since Postgres was read
    (``redis_moved``): then at least that (counters only grow)."""
    expected = {group: list(counts) for group, counts in postgres.items()}
    for batch in pending:
        if batch.batch_id in applied:
            continue
        for group, deltas in zip(batch.groups, batch.counts, strict=True):
            row = expected.get(group)
            if row is not None:
                for i, delta in enumerate(deltas):
                    row[i] -= delta
    wrong = []
    zero = (0,) * len(COUNTERS)
    for group, want in expected.items():
        have = redis.get(group, zero)
        if redis_moved:
            if any(h < w for h, w in zip(have, want, strict=True)):
                wrong.append(group)
        elif tuple(want) != tuple(have):
            wrong.append(group)
    return wrong


@dataclass(frozen=True, slots=True)
class Sample:
    """One round's result: groups compared and those that differ."""

    bucket: str
    compared: int
    mismatched: list[str]


async def reconcile_once(
    pool: asyncpg.Pool, redis: Redis, prefix: str, groups: int, now: datetime, rng: random.Random
) -> Sample | None:
    """Compare one sampled bucket; None when there is nothing to compare (no data yet, or
    Redis is not in the epoch Postgres names: the epoch check resyncs that)."""
    tenants = [row[0] for row in await pool.fetch(_TENANTS)]
    if not tenants:
        return None
    tenant, dimension = rng.choice(tenants), rng.choice(DIMENSIONS)
    today = now.astimezone(UTC).date()
    days = (today - oldest_kept_starts(now)[Period.DAILY]).days
    period, start = rng.choice(
        [
            (Period.ALLTIME, ALLTIME_START),
            *((Period.DAILY, today - timedelta(d)) for d in range(days + 1)),
        ]
    )
    counts_key = keys.counts_key(prefix, tenant, dimension, period.value, start)
    rank_key = keys.rank_key(prefix, tenant, dimension, period.value, start)
    size = int(await redis.zcard(rank_key))
    first = ""
    if size:
        at = rng.randrange(size)
        picked = await redis.zrange(rank_key, at, at)
        first = picked[0].decode() if picked and isinstance(picked[0], bytes) else ""
    moved_from = await redis.get(keys.applied_count_key(prefix))
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        state = await mirror_state(conn)
        args = (tenant, dimension, period.value, start)  # all time: date.min is -infinity
        rows = await conn.fetch(_GROUPS, *args, first, groups)
        if len(rows) < groups and first:  # wrap around to the bucket's first groups
            rows += [
                r for r in await conn.fetch(_GROUPS, *args, "", groups - len(rows)) if r[0] < first
            ]
        pending = [PendingBatch(r[0], r[1], r[2]) for r in await conn.fetch(_PENDING, *args)]
    postgres = {row[0]: tuple(int(v) for v in row[1:]) for row in rows}
    names = list(postgres)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.ready_key(prefix))
        pipe.get(keys.applied_count_key(prefix))
        for name in names:
            pipe.zscore(rank_key, name)
        if names:
            pipe.hmget(
                counts_key,
                [keys.counter_field(c, n) for n in names for c in keys.HASH_COUNTERS],
            )
        for batch in pending:
            pipe.exists(keys.applied_key(prefix, batch.batch_id))
        replies = await pipe.execute()
    ready, moved_to = replies[0], replies[1]
    if ready is None or ready.decode() != state.epoch:
        return None
    scores = replies[2 : 2 + len(names)]
    fields = replies[2 + len(names)] if names else []
    markers = replies[len(replies) - len(pending) :] if pending else []
    width = len(keys.HASH_COUNTERS)
    in_redis: dict[str, Counts] = {}
    for i, name in enumerate(names):
        named = dict(zip(keys.HASH_COUNTERS, fields[i * width : (i + 1) * width], strict=True))
        in_redis[name] = tuple(
            -int(scores[i] or 0) if c == "total" else int(named[c] or 0) for c in COUNTERS
        )
    applied = {b.batch_id for b, seen in zip(pending, markers, strict=True) if seen}
    wrong = mismatched_groups(postgres, pending, applied, in_redis, moved_from != moved_to)
    bucket = f"{tenant}/{dimension}/{period.value}/{start.isoformat()}"
    return Sample(bucket, len(names), wrong)
