"""``interaction-summary rebuild`` re-materializes every bucket from raw history, exactly,
in both stores, while the worker keeps counting."""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg

from core.config import Settings
from embedded.processes import cli_argv, service_env
from tests.integration.publishing import Publisher, wave
from tests.integration.stores import history_count, postgres_buckets, wait_for_exact_stores
from tests.integration.traffic import make_traffic
from tests.recount import distinct_events, expected_buckets
from tests.support import produce, wait_until


def rebuild(settings: Settings) -> str:
    done = subprocess.run(
        cli_argv("rebuild"),
        env=service_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_rebuild_after_losing_every_bucket_restores_the_exact_counts(
    settings: Settings, start_worker
) -> None:
    traffic = make_traffic(2500, seed=21)
    start_worker(settings)
    await produce(settings, traffic.messages)
    events = distinct_events(traffic.valid)
    expected = expected_buckets(events)
    await wait_for_exact_stores(settings, expected, len(events))

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("TRUNCATE interaction_bucket, distinct_seen")
    finally:
        await conn.close()
    assert await postgres_buckets(settings.database_url) == {}

    rebuild(settings)
    await wait_for_exact_stores(settings, expected, len(events))


async def test_rebuild_while_events_flow_neither_loses_nor_doubles(
    settings: Settings, start_worker
) -> None:
    """The rebuild starts once the worker is counting the second wave and ends before it has
    counted all of it (both asserted): events are counted before, during and after it."""
    first = wave(2000, seed=22, prefix="a")
    second = wave(5000, seed=23, prefix="b", republish=first.valid[:100])
    before = distinct_events(first.valid)
    events = distinct_events(first.valid + second.valid)
    start_worker(settings)
    async with Publisher(settings) as publisher:
        await publisher.send(first.messages)
        await wait_for_exact_stores(settings, expected_buckets(before), len(before))
        publishing = asyncio.create_task(publisher.send(second.messages, rate=400))

        async def counting_the_second_wave() -> bool:
            return await history_count(settings.database_url) > len(before)

        await wait_until(counting_the_second_wave, 60, 0.05, "the second wave is never counted")
        await asyncio.to_thread(rebuild, settings)
        counted_when_rebuilt = await history_count(settings.database_url)
        assert counted_when_rebuilt < len(events), "the rebuild must end while events still flow"
        await publishing

    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
