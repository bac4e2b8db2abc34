"""A worker stopped with SIGTERM leaves Redis holding what it committed to Postgres.

The Redis mirror of a committed batch runs in the background while the next batch is
counted; a stop that did not wait for it left Redis behind Postgres until another worker
started (found by bench.ingest: 1,083 of 1,000,000 events missing from Redis after the
worker's SIGTERM). With no worker running afterwards, nothing else could catch Redis up.
The test holds Redis writes back (CLIENT PAUSE ... WRITE) so that a committed batch surely
waits for its mirror, then drops the worker's Redis connection blocked in it (CLIENT KILL ID) so that the
mirror fails and the batch stays in the outbox, and stops the worker at once.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from core.config import Settings
from core.keys import ready_key
from tests.integration.stores import (
    history_count,
    kept_in_redis,
    postgres_buckets,
    redis_buckets,
)
from tests.integration.traffic import make_traffic
from tests.support import produce, wait_until


async def test_a_worker_stopped_mid_stream_has_mirrored_every_committed_batch(
    settings: Settings, start_worker
) -> None:
    traffic = make_traffic(30_000, duplicate_share=0, invalid_count=0)
    worker = start_worker(settings)
    publishing = asyncio.create_task(produce(settings, traffic.messages))
    try:
        redis = Redis.from_url(settings.redis_url)

        async def counting_under_way() -> bool:
            # Mirroring under way too: a Redis not resynced yet is the next worker's to fill.
            ready = await redis.exists(ready_key(settings.redis_prefix))
            return bool(ready) and await history_count(settings.database_url) >= 3_000

        await wait_until(counting_under_way, 120, 0.05, "the worker never counted 3,000 events")
        try:
            await redis.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
            paused_at = await history_count(settings.database_url)

            async def committed_while_paused() -> bool:
                return await history_count(settings.database_url) > paused_at

            await wait_until(committed_while_paused, 2, 0.05, "no batch committed in the pause")
            # Only the connections blocked in the worker's apply script: on a shared Redis
            # other clients keep theirs.
            blocked = [
                c["id"] for c in await redis.client_list() if c["cmd"] in ("evalsha", "eval")
            ]
            assert blocked, "no apply was waiting for the pause"
            for client_id in blocked:
                await redis.client_kill_filter(_id=client_id)
            assert worker.stop() == 0, worker.log_tail()
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
            await redis.aclose()
    finally:
        await publishing
    counted = await history_count(settings.database_url)
    assert 3_000 <= counted < len(traffic.valid), "the stop must land mid-stream"
    # No worker runs now: Redis must already hold every committed batch.
    in_postgres = kept_in_redis(await postgres_buckets(settings.database_url))
    in_redis = await redis_buckets(settings.redis_url, settings.redis_prefix)
    missing = {k: (v, in_redis.get(k)) for k, v in in_postgres.items() if in_redis.get(k) != v}
    assert not missing and in_redis.keys() == in_postgres.keys(), (
        f"{len(missing)} of {len(in_postgres)} buckets differ after the stop ({len(in_redis)} in"
        f" Redis), e.g. {list(missing.items())[:3]}"
    )
    assert "redis caught up before exit batches_left=0" in worker.logs()
