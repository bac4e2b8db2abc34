"""Issue 13, item 4: Redis is trusted only when provably current.

A Redis that comes back from an old snapshot, loses keys (evicted), or is flushed or
restarted while a resync copies into it must never answer: the API reads Postgres until the
worker has resynced it, then Redis answers exactly again. Each test watches every API answer
while Redis is wrong (each must equal the recount exactly: nothing flows meanwhile, so any
stale number is a wrong answer) and ends with the full recount comparison of both stores
and every API answer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from core import keys
from core.config import Settings
from streams.pipeline import COMMIT_LANES
from tests.conftest import MakeSettings
from tests.integration.api_oracle import (
    ApiClient,
    Recount,
    Watch,
    assert_api_matches_recount,
    watch_answers,
)
from tests.integration.credentials import make_keys
from tests.integration.faults import Restartable, own_redis
from tests.integration.publishing import Publisher, wave
from tests.integration.stores import kept_in_redis, redis_buckets, wait_for_exact_stores
from tests.recount import Event, distinct_events, expected_buckets
from tests.support import ServiceProcess, wait_until

TENANTS = ("default", "acme")
RESYNCED = "redis resynced"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Restartable]:
    """A Redis of this test's own. Requested before the services so it outlives them."""
    server = own_redis(tmp_path / "own")
    yield server
    server.stop()


async def _api(settings: Settings, start_api) -> ApiClient:
    made = await make_keys(settings.database_url, TENANTS)
    api = await start_api(settings)
    return ApiClient(api.url, {t: made[f"viewer:{t}"] for t in TENANTS})


async def _exact_everywhere(settings: Settings, events: list[Event], api: ApiClient) -> None:
    """Both stores equal the recount, and every API answer, current periods from Redis."""
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    await assert_api_matches_recount(api, Recount(events), period_source="redis")


async def _outbox_empty(settings: Settings) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return not await conn.fetchval("SELECT count(*) FROM redis_outbox")
    finally:
        await conn.close()


async def _prefixed(redis: Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]


async def _counted_in_api(worker: ServiceProcess, api: ApiClient, events: list[Event]) -> None:
    """Wait until a first resync happened and every answer is exact from Redis."""
    await worker.wait_for_log(RESYNCED)
    await assert_api_matches_recount(api, Recount(events), period_source="redis")


async def _watch_until_resynced(
    worker: ServiceProcess, api: ApiClient, events: list[Event], timeout: float = 60
) -> tuple[Watch, float]:
    """Every answer, round after round, must be exact until the worker logged one more
    resync than now; returns the watch and the seconds until that resync (the worker's log is
    polled beside the watch: a round of answers takes seconds on a busy machine)."""
    resyncs = worker.logs().count(RESYNCED)
    started = time.monotonic()

    async def resynced() -> float:
        await wait_until(
            lambda: worker.logs().count(RESYNCED) > resyncs,
            timeout,
            0.1,
            lambda: f"no resync within {timeout}s:\n{worker.log_tail(30)}",
        )
        return time.monotonic() - started

    waiting = asyncio.create_task(resynced())
    exact = Recount(events)
    watch = await watch_answers(api, exact, exact, waiting.done, Watch())
    return watch, await waiting


async def test_a_redis_restored_from_an_old_snapshot_is_never_trusted_and_is_resynced(
    make_settings: MakeSettings, start_worker, start_api
) -> None:
    settings = await make_settings()
    worker = start_worker(settings)
    api = await _api(settings, start_api)
    first = wave(1500, seed=61, prefix="a")
    before = distinct_events(first.valid)
    async with Publisher(settings) as publisher:
        await publisher.send(first.messages)
        await wait_for_exact_stores(settings, expected_buckets(before), len(before))
        await _counted_in_api(worker, api, before)

        redis = Redis.from_url(settings.redis_url)
        try:
            # The snapshot: every key of ours as it is now (an RDB taken at this moment).
            names = await _prefixed(redis, settings.redis_prefix)
            snapshot = [(name, await redis.dump(name), await redis.pttl(name)) for name in names]

            second = wave(1500, seed=62, prefix="b", republish=first.valid[:100])
            after = distinct_events(first.valid + second.valid)
            await publisher.send(second.messages)
            await wait_for_exact_stores(settings, expected_buckets(after), len(after))
            await wait_until(lambda: _outbox_empty(settings), 30, 0.2, "outbox never drained")
            await assert_api_matches_recount(api, Recount(after), period_source="redis")

            # Redis comes back from the old snapshot, in one step: same epoch, older counts.
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(*await _prefixed(redis, settings.redis_prefix))
                for name, dumped, ttl in snapshot:
                    pipe.restore(name, max(ttl, 0), dumped, replace=True)
                await pipe.execute()
            stale = await redis_buckets(settings.redis_url, settings.redis_prefix)
            assert stale != kept_in_redis(expected_buckets(after)), "the snapshot is older"
        finally:
            await redis.aclose()

    watch, seconds = await _watch_until_resynced(worker, api, after)
    assert not watch.problems, "\n".join(watch.problems[:10])
    assert watch.answers > 0 and watch.unavailable == 0
    assert seconds < 10, f"resynced only after {seconds:.1f}s"
    assert "reason=lost_batches" in worker.logs()
    await _exact_everywhere(settings, after, api)
    assert worker.running and worker.starts == 1


async def test_evicted_bucket_keys_send_reads_to_postgres_and_the_reconciliation_resyncs(
    make_settings: MakeSettings, start_worker, start_api
) -> None:
    settings = await make_settings(redis_reconcile_seconds=0.5)
    worker = start_worker(settings)
    api = await _api(settings, start_api)
    first = wave(1500, seed=71, prefix="a")
    events = distinct_events(first.valid)
    async with Publisher(settings) as publisher:
        await publisher.send(first.messages)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    await _counted_in_api(worker, api, events)

    redis = Redis.from_url(settings.redis_url)
    try:  # an LRU policy evicts whole keys: a third of the bucket keys go
        p = settings.redis_prefix
        bucket_keys = [
            k
            for k in await _prefixed(redis, p)
            if k.startswith((f"{p}:cnt:".encode(), f"{p}:rank:".encode()))
        ]
        evicted = random.Random(7).sample(bucket_keys, len(bucket_keys) // 3)
        await redis.delete(*evicted)
        assert await redis.exists(keys.ready_key(p)), "the epoch alone cannot tell"
    finally:
        await redis.aclose()

    watch, seconds = await _watch_until_resynced(worker, api, events)
    assert not watch.problems, "\n".join(watch.problems[:10])
    assert watch.answers > 0 and watch.unavailable == 0
    assert "postgres" in watch.sources, "reads of evicted buckets went to Postgres"
    assert seconds < 20, f"resynced only after {seconds:.1f}s"
    assert "reason=mismatch" in worker.logs() and "redis differs from postgres" in worker.logs()
    await _exact_everywhere(settings, events, api)
    assert worker.running and worker.starts == 1


async def test_redis_flushed_or_restarted_between_two_chunks_of_a_resync_is_never_marked_ready(
    redis_server: Restartable, make_settings: MakeSettings, start_worker, start_api
) -> None:
    """Small chunks make the copy long enough to cut: first a FLUSHALL between two chunks
    (the copy goes on into an empty Redis: it must not be marked ready), then a restart."""
    settings = await make_settings(redis_url=redis_server.url, redis_resync_chunk_rows=10)
    worker = start_worker(settings)
    api = await _api(settings, start_api)
    first = wave(2000, seed=81, prefix="a")
    events = distinct_events(first.valid)
    async with Publisher(settings) as publisher:
        await publisher.send(first.messages)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    await _counted_in_api(worker, api, events)

    redis = Redis.from_url(settings.redis_url)
    resync = keys.resync_key(settings.redis_prefix)

    async def copying() -> bool:
        return int(await redis.hget(resync, "rows") or 0) > 0

    try:
        for cut in ("flush", "restart"):
            lost = worker.logs().count("lost part of its copy")
            await redis.flushall()  # Redis not ready: the next tick resyncs
            await wait_until(copying, 30, 0.002, "the resync never started copying")
            if cut == "flush":
                await redis.flushall()
            else:
                redis_server.stop()
                redis_server.start()  # empty: nothing was persisted
            watch, _ = await _watch_until_resynced(worker, api, events)
            assert not watch.problems, f"{cut}: " + "\n".join(watch.problems[:10])
            assert watch.answers > 0 and watch.unavailable == 0
            if cut == "flush":  # the copy went on and was refused at its end
                assert worker.logs().count("lost part of its copy") > lost
            await _exact_everywhere(settings, events, api)
    finally:
        await redis.aclose()
    assert worker.running and worker.starts == 1


async def test_an_outbox_past_its_bound_is_dropped_and_redis_is_resynced_when_back(
    redis_server: Restartable, make_settings: MakeSettings, start_worker, start_api
) -> None:
    """While Redis is away committed batches wait in the outbox; past the bound they are
    dropped with a new epoch, and the Redis that comes back (with its old state) is resynced."""
    settings = await make_settings(redis_url=redis_server.url, redis_outbox_max_batches=5)
    worker = start_worker(settings)
    api = await _api(settings, start_api)
    first = wave(1000, seed=111, prefix="a")
    async with Publisher(settings) as publisher:
        await publisher.send(first.messages)
        before = distinct_events(first.valid)
        await wait_for_exact_stores(settings, expected_buckets(before), len(before))
        await _counted_in_api(worker, api, before)

        redis_server.stop()
        second = wave(1500, seed=112, prefix="b", republish=first.valid[:50])
        await publisher.send(second.messages, rate=300)  # many small batches
    after = distinct_events(first.valid + second.valid)
    await wait_until(
        lambda: "redis outbox over its bound, dropped" in worker.logs(),
        60,
        0.2,
        lambda: f"the outbox was never dropped:\n{worker.log_tail(30)}",
    )
    conn = await asyncpg.connect(settings.database_url)
    try:
        pending = await conn.fetchval("SELECT count(DISTINCT batch_id) FROM redis_outbox")
    finally:
        await conn.close()
    # a tick's worth of batches per commit lane (the lanes commit side by side)
    tick = 5 * COMMIT_LANES
    assert pending <= 5 + tick, f"{pending} batches kept: the bound is 5 (and a tick's worth)"
    redis_server.start()  # empty here; a Redis that kept its state holds an old epoch
    await _exact_everywhere(settings, after, api)
    assert worker.running and worker.starts == 1
