"""Applies committed outbox batches to Redis exactly once, and rebuilds Redis from Postgres.

Redis is a mirror of the Postgres buckets the API reads hot (current periods and all-time).
- A batch is applied by one Lua script that first sets the marker ``applied:{outbox id}``
  with NX: a batch replayed by the catch-up loop or another worker finds the marker and is
  skipped, atomically.
- The script only writes while ``ready`` exists. A flushed or restarted Redis has no
  ``ready``: writes pause (batches wait in the outbox) until ``resync`` has copied a
  Postgres snapshot, marked the batches that snapshot already contains, and set ``ready``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime

import asyncpg
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from core import keys
from core.db import Connection
from core.periods import Period, redis_expiry
from streams import metrics
from streams.counters import Deltas, decode_deltas

log = logging.getLogger(__name__)

# ARGV: marker ttl, then per bucket: counts key, rank key, group id, expire-at (0: never),
# then one delta per counter in keys.COUNTERS order.
APPLY_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local names = {'impression', 'click', 'dismiss', 'accept', 'convert', 'total', 'distinct'}
local i = 2
while i <= #ARGV do
  local h, z, m, exp = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  for c = 1, 7 do
    local v = tonumber(ARGV[i + 3 + c])
    if v ~= 0 then redis.call('HINCRBY', h, names[c] .. ':' .. m, v) end
  end
  local total = tonumber(ARGV[i + 9])
  if total ~= 0 then redis.call('ZINCRBY', z, -total, m) end
  if exp > 0 then
    redis.call('EXPIREAT', h, exp)
    redis.call('EXPIREAT', z, exp)
  end
  i = i + 11
end
return 1
"""
_ARGS_PER_BUCKET = 4 + len(keys.COUNTERS)

APPLIED = 1
ALREADY_APPLIED = 0
NOT_READY = -1

_RESYNC_LOCK_ID = 0x1A7E_5A12
_SELECT_PENDING = "SELECT id FROM redis_outbox"
_SELECT_OUTBOX = "SELECT id, deltas FROM redis_outbox ORDER BY id LIMIT $1"
_DELETE_OUTBOX = "DELETE FROM redis_outbox WHERE id = ANY($1::int8[])"
# A cheap superset of the buckets Redis still keeps; redis_expiry then decides exactly.
_SELECT_HOT_BUCKETS = """
SELECT tenant_id, dimension, period, bucket_start, group_id,
       impression, click, dismiss, accept, convert, total, distinct_count
FROM interaction_bucket
WHERE period = 'alltime'
   OR (period = 'daily' AND bucket_start >= $1::date - 1)
   OR (period = 'weekly' AND bucket_start >= $1::date - 7 - 1)
   OR (period = 'monthly' AND bucket_start >= (date_trunc('month', $1::date) - interval '1 month')::date)
"""


def apply_args(deltas: Deltas, prefix: str, now: datetime) -> list[str | int]:
    """Lua ARGV for a batch's deltas, leaving out buckets Redis no longer keeps."""
    args: list[str | int] = [keys.APPLIED_MARKER_TTL_SECONDS]
    # Many groups share a bucket: its key names and expiry are computed once per batch.
    buckets: dict[tuple[str, str, Period, date], tuple[str, str, int] | None] = {}
    for key, counts in deltas.items():
        bucket = (key.tenant_id, key.dimension, key.period, key.start)
        if bucket not in buckets:
            buckets[bucket] = _bucket_names(prefix, *bucket, now)
        names = buckets[bucket]
        if names is None:
            continue
        counts_key, rank_key, expire_at = names
        args += [counts_key, rank_key, key.group_id, expire_at, *counts]
    return args


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


class RedisSink:
    """Redis writes of the worker: apply, catch up from the outbox, resync after a flush."""

    def __init__(self, redis: Redis, pool: asyncpg.Pool, prefix: str) -> None:
        self._redis = redis
        self._pool = pool
        self._prefix = prefix
        self._apply = redis.register_script(APPLY_SCRIPT)

    async def apply(self, outbox_id: int, payload: bytes) -> int:
        """Apply one committed batch; APPLIED, ALREADY_APPLIED or NOT_READY."""
        return await self.apply_deltas(outbox_id, decode_deltas(payload))

    async def apply_deltas(self, outbox_id: int, deltas: Deltas) -> int:
        """``apply`` for the deltas of outbox row ``outbox_id`` (no decoding of the payload)."""
        args = apply_args(deltas, self._prefix, datetime.now(UTC))
        marker_keys = [keys.ready_key(self._prefix), keys.applied_key(self._prefix, outbox_id)]
        return int(await self._apply(keys=marker_keys, args=args))

    async def forget(self, outbox_ids: Sequence[int]) -> None:
        """Drop outbox rows that Redis holds (their markers fence any replay)."""
        if outbox_ids:
            await self._pool.execute(_DELETE_OUTBOX, list(outbox_ids))

    async def drain_outbox(self, limit: int = 500) -> int:
        """Apply every batch still in the outbox; returns how many rows were cleared.

        Stops early when Redis is not ready: ``resync`` then brings it back.
        """
        rows = await self._pool.fetch(_SELECT_OUTBOX, limit)
        done: list[int] = []
        try:
            for row in rows:
                if await self.apply(row["id"], row["deltas"]) == NOT_READY:
                    break
                done.append(row["id"])
        finally:
            await self.forget(done)
        metrics.OUTBOX_PENDING.set(len(rows) - len(done))
        return len(done)

    async def is_ready(self) -> bool:
        return bool(await self._redis.exists(keys.ready_key(self._prefix)))

    async def resync(self) -> bool:
        """Copy the Postgres buckets into an empty Redis; False if another process is doing it."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RESYNC_LOCK_ID):
                return False
            try:
                await self._resync(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _RESYNC_LOCK_ID)
        return True

    async def _resync(self, conn: Connection) -> None:
        started = datetime.now(UTC)
        # Order matters: once `ready` is gone no batch is applied, so every batch already in
        # Redis was committed before the snapshot below and is part of it.
        await self._redis.delete(keys.ready_key(self._prefix))
        await self._delete_data_keys()
        copied = 0
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            pending = [row["id"] for row in await conn.fetch(_SELECT_PENDING)]
            async for rows in _chunks(conn, _SELECT_HOT_BUCKETS, started.date()):
                await self._write_snapshot_rows(rows, started)
                copied += len(rows)
        async with self._redis.pipeline(transaction=False) as pipe:
            for outbox_id in pending:
                pipe.set(
                    keys.applied_key(self._prefix, outbox_id),
                    1,
                    ex=keys.APPLIED_MARKER_TTL_SECONDS,
                )
            pipe.set(keys.ready_key(self._prefix), started.isoformat())
            await pipe.execute()
        log.info(
            "redis resynced buckets=%d pending_batches=%d seconds=%.2f",
            copied,
            len(pending),
            (datetime.now(UTC) - started).total_seconds(),
        )

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

    async def _write_snapshot_rows(self, rows: list[asyncpg.Record], now: datetime) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                period = Period(row["period"])
                start = row["bucket_start"]
                expires = redis_expiry(period, start)
                if expires is not None and expires <= now:
                    continue
                tenant, dimension, group_id = row["tenant_id"], row["dimension"], row["group_id"]
                ckey = keys.counts_key(self._prefix, tenant, dimension, period, start)
                rkey = keys.rank_key(self._prefix, tenant, dimension, period, start)
                values = (*(row[c] for c in keys.COUNTERS[:-1]), row["distinct_count"])
                mapping: dict[FieldT, EncodableT] = {
                    keys.counter_field(name, group_id): value
                    for name, value in zip(keys.COUNTERS, values, strict=True)
                    if value
                }
                if mapping:
                    pipe.hset(ckey, mapping=mapping)
                pipe.zadd(rkey, {group_id: -row["total"]})
                if expires is not None:
                    pipe.expireat(ckey, int(expires.timestamp()))
                    pipe.expireat(rkey, int(expires.timestamp()))
            await pipe.execute()


async def _chunks(conn: Connection, query: str, *args: object, size: int = 5000):  # type: ignore[no-untyped-def]
    """Rows of ``query`` in lists of ``size`` (a server-side cursor: bounded memory)."""
    chunk: list[asyncpg.Record] = []
    async for row in conn.cursor(query, *args, prefetch=size):
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
