"""``interaction-summary rebuild`` re-materializes every bucket from raw history, exactly,
in both stores, while the worker keeps counting."""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg

from core.config import Settings
from tests.integration.stores import postgres_buckets, wait_for_exact_stores
from tests.integration.traffic import make_traffic
from tests.recount import distinct_events, expected_buckets
from tests.support import cli_argv, produce, service_env


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
    first, second = make_traffic(3000, seed=22), make_traffic(3000, seed=23)
    for event in second.valid:  # distinct ids from the first batch of traffic
        event["id"] = "second-" + event["id"]
    start_worker(settings)
    await produce(settings, first.messages)
    producing = asyncio.create_task(produce(settings, second.messages))
    await asyncio.to_thread(
        rebuild, settings
    )  # the rebuild runs while the second traffic is counted
    await producing

    events = distinct_events(first.valid + second.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
