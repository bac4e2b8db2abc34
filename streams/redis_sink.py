"""Applies committed batches to Redis exactly once, and rebuilds Redis from Postgres.

Redis is a mirror of the buckets the API reads hot (current periods and all-time).
- A batch is applied by one Lua script that first sets the marker ``applied:{batch id}``
  with NX: a batch replayed by the catch-up loop or another worker finds the marker and is
  skipped, atomically.
- Redis is trusted only when provably current (core/mirror.py): the script writes only while
  ``ready`` holds the epoch Postgres names, and counts each batch it applies; the worker's
  timer resyncs a Redis that is not ready, holds another epoch, or counts fewer batches than
  Postgres confirmed (it came back from an old snapshot). A resync writes a new epoch to
  Postgres, copies a snapshot in chunks, and marks Redis ready only if no chunk was lost.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from core import keys
from core.db import Connection
from core.distinct import bucket_of, tag
from core.hot import oldest_kept_starts, redis_expiry
from core.mirror import MirrorState, new_epoch
from core.periods import Period, bucket_start, days_of, next_bucket_start
from core.schema import COUNTERS
from streams import outbox
from streams import reconcile as reconciling
from streams.outbox import HotBucket

log = logging.getLogger(__name__)

_TOTAL = COUNTERS.index("total") + 1  # Lua tables count from 1
# (Lua position in a counts row, field name) of each counter kept in the bucket's hash.
_HASH_FIELDS = orjson.dumps([[COUNTERS.index(c) + 1, c] for c in keys.HASH_COUNTERS])

# KEYS: ready, the batch's marker, the applied-batch count. ARGV: marker ttl, the epoch the
# worker holds from Postgres, the hash fields as JSON, the batch as JSON: [[counts key, rank
# key, expire-at (0: never), [group, ...], [[count, ...], ...], action counts key, presence
# field], ...]; a bucket with custom-type deltas has four more entries: its types key, then
# the deltas as [group, ...], [type, ...], [count, ...].
# One JSON argument: parsing it in Redis costs less than encoding thousands of arguments.
# A count brought back to zero (an erasure's negative deltas, streams/erasure.py) is removed,
# so Redis holds only groups with interactions, as Postgres does; increments commute, so
# whichever order batches arrive in, the keys end up the same.
# Counts are never negative, so only a negative delta (an erasure) can bring one to zero: a
# positive one is applied without looking at the reply.
APPLY_SCRIPT = f"""
local call = redis.call
if call('GET', KEYS[1]) ~= ARGV[2] then return -1 end
if not call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local at, names = {{}}, {{}}
for k, f in ipairs(cjson.decode(ARGV[3])) do at[k], names[k] = f[1], f[2] .. ':' end
local nf = #at
for _, bucket in ipairs(cjson.decode(ARGV[4])) do
  local h, z, exp, groups, counts = bucket[1], bucket[2], bucket[3], bucket[4], bucket[5]
  for i, member in ipairs(groups) do
    local row = counts[i]
    for k = 1, nf do
      local v = row[at[k]]
      if v > 0 then
        call('HINCRBY', h, names[k] .. member, v)
      elseif v < 0 then
        local field = names[k] .. member
        if call('HINCRBY', h, field, v) == 0 then call('HDEL', h, field) end
      end
    end
    local t = row[{_TOTAL}]
    if t > 0 then
      call('ZINCRBY', z, -t, member)
    elseif t < 0 then
      if tonumber(call('ZINCRBY', z, -t, member)) == 0 then call('ZREM', z, member) end
    end
  end
  call('HSET', bucket[6], bucket[7], 1)
  local tk = bucket[8]
  if tk then
    local og, ot, oc = bucket[9], bucket[10], bucket[11]
    for j, g in ipairs(og) do
      local field = '{keys.OUTCOME_FIELD_PREFIX}' .. ot[j] .. ':' .. g
      if call('HINCRBY', h, field, oc[j]) == 0 then call('HDEL', h, field) end
      call('SADD', tk, ot[j])
    end
    if exp > 0 then call('EXPIREAT', tk, exp) end
  end
  if exp > 0 then
    call('EXPIREAT', h, exp)
    call('EXPIREAT', z, exp)
    call('EXPIREAT', bucket[6], exp)
  end
end
call('INCR', KEYS[3])
return 1
"""

# The end of a resync. KEYS: resync, ready, applied count, then the markers of the batches
# the snapshot holds. ARGV: epoch, rows copied, batches counted as applied, marker ttl.
# Ready only if the resync hash still says what this resync wrote: a Redis restarted or
# flushed between two chunks lost it, and stays not ready (the next tick copies again).
FINISH_RESYNC_SCRIPT = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1]
   or redis.call('HGET', KEYS[1], 'rows') ~= ARGV[2] then
  return 0
end
for i = 4, #KEYS do redis.call('SET', KEYS[i], '1', 'EX', ARGV[4]) end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""

APPLIED = 1
ALREADY_APPLIED = 0
NOT_READY = -1

_RESYNC_LOCK_ID = 0x1A7E_5A12
_COUNT_COLUMNS = ", ".join(c if c != "distinct" else "distinct_count" for c in COUNTERS)
# The buckets Postgres stores that Redis keeps, their shards summed ($1: the oldest daily
# start Redis keeps).
_SELECT_STORED_HOT = f"""
SELECT tenant_id, dimension, period, bucket_start, group_id,
       {", ".join(f"sum({c})::int8 AS {c}" for c in _COUNT_COLUMNS.split(", "))}
FROM interaction_bucket
WHERE period = 'alltime' OR (period = 'daily' AND bucket_start >= $1)
GROUP BY 1, 2, 3, 4, 5
"""
# Weekly and monthly buckets Redis keeps, summed from their days; their distinct counts
# come from _SELECT_DISTINCT_OF. $1..$3: the buckets' periods, starts and last days.
_SELECT_SUMMED_HOT = f"""
SELECT b.tenant_id, b.dimension, p.period, p.start AS bucket_start, b.group_id,
       {", ".join(f"sum(b.{c})::int8 AS {c}" for c in COUNTERS[:-1])}, 0::int8 AS distinct_count
FROM unnest($1::text[], $2::date[], $3::date[]) AS p(period, start, last)
JOIN interaction_bucket AS b
  ON b.period = 'daily' AND b.bucket_start BETWEEN p.start AND p.last
GROUP BY 1, 2, 3, 4, 5
"""
# Custom-type counts of the same buckets: stored ones ($1: the oldest daily start Redis
# keeps), then weekly and monthly ones summed from days ($1..$3 as above).
_SELECT_STORED_OUTCOMES = """
SELECT tenant_id, dimension, period, bucket_start, group_id, type, sum(count)::int8 AS n
FROM interaction_bucket_outcome
WHERE period = 'alltime' OR (period = 'daily' AND bucket_start >= $1)
GROUP BY 1, 2, 3, 4, 5, 6
"""
_SELECT_SUMMED_OUTCOMES = """
SELECT b.tenant_id, b.dimension, p.period, p.start AS bucket_start, b.group_id, b.type,
       sum(b.count)::int8 AS n
FROM unnest($1::text[], $2::date[], $3::date[]) AS p(period, start, last)
JOIN interaction_bucket_outcome AS b
  ON b.period = 'daily' AND b.bucket_start BETWEEN p.start AND p.last
GROUP BY 1, 2, 3, 4, 5, 6
"""
_SELECT_DISTINCT_OF = """
SELECT tenant_id, dimension, group_id, t AS tag, count(*) AS n
FROM distinct_seen CROSS JOIN LATERAL unnest(tags) AS t
WHERE t = ANY($1::int4[])
GROUP BY 1, 2, 3, 4
"""


def apply_payload(buckets: Sequence[HotBucket], prefix: str, now: datetime) -> bytes:
    """The script's batch argument, leaving out buckets Redis no longer keeps at ``now``."""
    payload = []
    for b in buckets:
        names = _bucket_names(prefix, b.tenant_id, b.dimension, b.period, b.start, now)
        if names is None:
            continue
        presence = _presence(prefix, b.tenant_id, b.dimension, b.period, b.start)
        entry: list[object] = [*names, b.groups, b.counts, *presence]
        if b.outcome_groups:
            types = keys.types_key(prefix, b.tenant_id, b.dimension, b.period, b.start)
            entry += [types, b.outcome_groups, b.outcome_types, b.outcome_counts]
        payload.append(entry)
    return orjson.dumps(payload)


def _presence(
    prefix: str, tenant: str, dimension: str, period: Period, start: date
) -> tuple[str, str]:
    """(action counts key, field) recording that ``dimension`` has data in the bucket."""
    return keys.presence_key(prefix, tenant, period, start), keys.present_field(dimension)


def _bucket_names(
    prefix: str, tenant: str, dimension: str, period: Period, start: date, now: datetime
) -> tuple[str, str, int] | None:
    """(counts key, rank key, expire-at or 0) of a bucket; None if Redis no longer keeps it."""
    expires = redis_expiry(period, start)
    if expires is not None and expires <= now:
        return None
    return (
        keys.counts_key(prefix, tenant, dimension, period, start),
        keys.rank_key(prefix, tenant, dimension, period, start),
        int(expires.timestamp()) if expires else 0,
    )


def kept_summed_buckets(now: datetime) -> list[tuple[Period, date, date]]:
    """(period, start, last day) of every weekly and monthly bucket Redis keeps at ``now``."""
    today = now.astimezone(UTC).date()
    found = []
    for period, oldest in oldest_kept_starts(now).items():
        start: date | None = oldest
        while start is not None and start <= bucket_start(period, today):
            span = days_of(period, start)
            if span is None:  # a period Postgres stores: nothing to sum
                break
            found.append((period, start, span[1]))
            start = next_bucket_start(period, start)
    return found


class RedisSink:
    """Redis writes of the worker: apply a batch, resync when Redis is not provably current.

    ``epoch`` is the epoch Postgres names (core/mirror.py), refreshed by ``keep_current``;
    an apply under any other epoch is refused by the script (NOT_READY).
    """

    def __init__(self, redis: Redis, prefix: str, resync_chunk_rows: int = 5000) -> None:
        self._redis = redis
        self._prefix = prefix
        self._chunk_rows = resync_chunk_rows
        self._apply = redis.register_script(APPLY_SCRIPT)
        self._finish = redis.register_script(FINISH_RESYNC_SCRIPT)
        self.epoch: str | None = None

    async def apply(self, batch_id: int, buckets: Sequence[HotBucket], epoch: str | None) -> int:
        """Apply one committed batch under ``epoch``; APPLIED, ALREADY_APPLIED or NOT_READY."""
        payload = apply_payload(buckets, self._prefix, datetime.now(UTC))
        script_keys = [
            keys.ready_key(self._prefix),
            keys.applied_key(self._prefix, batch_id),
            keys.applied_count_key(self._prefix),
        ]
        args: list[int | str | bytes] = [
            keys.APPLIED_MARKER_TTL_SECONDS,
            epoch or "",  # unknown yet: matches no `ready` (the script answers NOT_READY)
            _HASH_FIELDS,
            payload,
        ]
        return int(await self._apply(keys=script_keys, args=args))

    async def why_not_current(self, state: MirrorState) -> str | None:
        """None when Redis holds ``state``'s epoch and at least its confirmed batches; else
        the reason (a word for the metric's label)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.ready_key(self._prefix))
            pipe.get(keys.applied_count_key(self._prefix))
            ready, applied = await pipe.execute()
        if ready is None:
            return "not_ready"
        if ready.decode() != state.epoch:
            return "epoch"
        if int(applied or 0) < state.confirmed:
            return "lost_batches"
        return None

    async def reconcile(
        self, pool: asyncpg.Pool, groups: int, rng: random.Random
    ) -> reconciling.Sample | None:
        """Compare a sample of one current bucket with Postgres (streams/reconcile.py)."""
        return await reconciling.reconcile_once(
            pool, self._redis, self._prefix, groups, datetime.now(UTC), rng
        )

    async def resync(self, pool: asyncpg.Pool) -> bool:
        """Copy the Postgres buckets into an empty Redis under a new epoch; False if another
        process is doing it, or if Redis lost part of the copy (the next call copies again)."""
        async with pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RESYNC_LOCK_ID):
                return False
            try:
                return await self._resync(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _RESYNC_LOCK_ID)

    async def _resync(self, conn: Connection) -> bool:
        started = datetime.now(UTC)
        # Order matters: once `ready` is gone no batch is applied, so every batch already in
        # Redis was committed before the snapshot below and is part of it.
        await self._redis.delete(keys.ready_key(self._prefix))
        # The new epoch before the snapshot: a batch deleted from the outbox from now on is
        # confirmed in this epoch only if it was applied (or marked) in it.
        epoch = await new_epoch(conn)
        self.epoch = epoch
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.resync_key(self._prefix), keys.applied_count_key(self._prefix))
            pipe.hset(keys.resync_key(self._prefix), mapping={"epoch": epoch, "rows": 0})
            await pipe.execute()
        await self._delete_data_keys()
        copied = 0
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            pending = await outbox.pending_ids(conn)
            oldest_day = oldest_kept_starts(started)[Period.DAILY]
            async for rows in _chunks(conn, _SELECT_STORED_HOT, oldest_day, size=self._chunk_rows):
                copied += await self._write_snapshot_rows(rows, {}, started)
            summed = kept_summed_buckets(started)
            distinct = await _distinct_counts(conn, [tag(p, s) for p, s, _ in summed])
            args = (
                [p.value for p, _, _ in summed],
                [s for _, s, _ in summed],
                [e for *_, e in summed],
            )
            async for rows in _chunks(conn, _SELECT_SUMMED_HOT, *args, size=self._chunk_rows):
                copied += await self._write_snapshot_rows(rows, distinct, started)
            async for rows in _chunks(
                conn, _SELECT_STORED_OUTCOMES, oldest_day, size=self._chunk_rows
            ):
                await self._write_snapshot_outcomes(rows, started)
            async for rows in _chunks(conn, _SELECT_SUMMED_OUTCOMES, *args, size=self._chunk_rows):
                await self._write_snapshot_outcomes(rows, started)
        # Batches of the snapshot deleted from the outbox since were confirmed in no epoch:
        # only those still there will be (when a worker finds their marker and deletes them).
        still = await outbox.still_pending(conn, pending)
        finished = await self._finish(
            keys=[
                keys.resync_key(self._prefix),
                keys.ready_key(self._prefix),
                keys.applied_count_key(self._prefix),
                *(keys.applied_key(self._prefix, batch_id) for batch_id in pending),
            ],
            args=[epoch, copied, len(still), keys.APPLIED_MARKER_TTL_SECONDS],
        )
        seconds = (datetime.now(UTC) - started).total_seconds()
        if not finished:
            log.warning(
                "redis resync lost part of its copy (restarted or flushed meanwhile), not"
                " marked ready epoch=%s buckets=%d seconds=%.2f",
                epoch,
                copied,
                seconds,
            )
            return False
        log.info(
            "redis resynced epoch=%s buckets=%d pending_batches=%d seconds=%.2f",
            epoch,
            copied,
            len(pending),
            seconds,
        )
        return True

    async def _delete_data_keys(self) -> None:
        for pattern in keys.data_key_patterns(self._prefix):
            batch: list[bytes] = []
            async for key in self._redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                await self._redis.unlink(*batch)

    async def _write_snapshot_rows(
        self,
        rows: list[asyncpg.Record],
        distinct: dict[tuple[str, str, Period, date, str], int],
        now: datetime,
    ) -> int:
        """Write one chunk in one transaction, with its row count in the resync hash."""
        written = 0
        presence: dict[tuple[str, str], int] = {}  # (action counts key, field) -> expire-at
        async with self._redis.pipeline(transaction=True) as pipe:
            for row in rows:
                period = Period(row["period"])
                start = row["bucket_start"]
                tenant, dimension = row["tenant_id"], row["dimension"]
                names = _bucket_names(self._prefix, tenant, dimension, period, start, now)
                if names is None:
                    continue
                ckey, rkey, expire_at = names
                group_id = row["group_id"]
                values = [row[c] for c in _COUNT_COLUMNS.split(", ")]
                bucket = (tenant, dimension, period, start, group_id)
                values[-1] += distinct.get(bucket, 0)
                mapping: dict[FieldT, EncodableT] = {
                    keys.counter_field(name, group_id): value
                    for name, value in zip(COUNTERS, values, strict=True)
                    if value and name in keys.HASH_COUNTERS
                }
                if mapping:
                    pipe.hset(ckey, mapping=mapping)
                pipe.zadd(rkey, {group_id: -row["total"]})
                presence[_presence(self._prefix, tenant, dimension, period, start)] = expire_at
                if expire_at:
                    pipe.expireat(ckey, expire_at)
                    pipe.expireat(rkey, expire_at)
                written += 1
            for (presence_key, field), expire_at in presence.items():
                pipe.hset(presence_key, field, 1)
                if expire_at:
                    pipe.expireat(presence_key, expire_at)
            pipe.hincrby(keys.resync_key(self._prefix), "rows", written)
            await pipe.execute()
        return written

    async def _write_snapshot_outcomes(self, rows: list[asyncpg.Record], now: datetime) -> None:
        """Custom-type counts into their buckets' hashes and types sets (rank keys exist:
        every such count is part of its group's total, copied before)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                period = Period(row["period"])
                start = row["bucket_start"]
                tenant, dimension = row["tenant_id"], row["dimension"]
                names = _bucket_names(self._prefix, tenant, dimension, period, start, now)
                if names is None or not row["n"]:
                    continue
                ckey, _, expire_at = names
                tkey = keys.types_key(self._prefix, tenant, dimension, period, start)
                pipe.hset(ckey, keys.outcome_field(row["type"], row["group_id"]), row["n"])
                pipe.sadd(tkey, row["type"])
                if expire_at:
                    pipe.expireat(tkey, expire_at)
            await pipe.execute()


async def _distinct_counts(
    conn: Connection, tags: list[int]
) -> dict[tuple[str, str, Period, date, str], int]:
    """Distinct items per group in the buckets of ``tags``, keyed like a bucket row."""
    counts = {}
    for row in await conn.fetch(_SELECT_DISTINCT_OF, tags):
        period, start = bucket_of(row["tag"])
        counts[(row["tenant_id"], row["dimension"], period, start, row["group_id"])] = row["n"]
    return counts


async def _chunks(
    conn: Connection, query: str, *args: object, size: int = 5000
) -> AsyncIterator[list[asyncpg.Record]]:
    """Rows of ``query`` in lists of ``size`` (a server-side cursor: bounded memory)."""
    chunk: list[asyncpg.Record] = []
    async for row in conn.cursor(query, *args, prefetch=size):
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
