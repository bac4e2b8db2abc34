"""Issue 13: ``interaction-summary up`` stops without losing what its in-memory broker holds."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from cli.stack import DATABASE_NAME, DEMO_HISTORY_DAYS, publish_demo_history
from core.config import Settings
from embedded.isolation import database_dsn
from embedded.processes import clean_env, cli_argv, free_port
from embedded.servers import start_postgres
from tests.integration.publishing import Publisher, wave
from tests.integration.stores import history_count, postgres_buckets
from tests.recount import distinct_events, expected_buckets
from tests.support import wait_until


@pytest.mark.slow
async def test_ctrl_c_of_up_right_after_publishing_counts_every_event_before_the_broker_stops(
    tmp_path: Path,
) -> None:
    """20,000 events published to the embedded stack, Ctrl-C at once: the shutdown waits for
    the worker, so all of them are in Postgres afterwards (the broker kept them only in memory)."""
    state = tmp_path / "stack"
    env = clean_env(COLUMNS="200")
    output = tmp_path / "up.log"
    with output.open("wb") as log:
        up = subprocess.Popen(
            cli_argv("up", "--state-dir", str(state), "--api-port", str(free_port())),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        stack_file = state / "stack.json"
        await wait_until(stack_file.exists, 180, 0.2, lambda: output.read_text(errors="replace"))
        stack = json.loads(stack_file.read_text())
        settings = Settings(kafka_bootstrap_servers=stack["kafka_bootstrap"], topic=stack["topic"])
        traffic = wave(20_000, seed=91, prefix="u")
        async with Publisher(settings) as publisher:
            await publisher.send(traffic.messages)
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(300) == 0
    finally:
        if up.poll() is None:
            up.kill()
    said = output.read_text(errors="replace")
    assert "every event in the topic is counted" in said, said[-2000:]

    postgres = start_postgres(state / "postgres", free_port(), tmp_path / "postgres.log")
    try:
        dsn = database_dsn(postgres.url, DATABASE_NAME)
        events = distinct_events(traffic.valid)
        assert await history_count(dsn) == len(events)
        assert await postgres_buckets(dsn) == expected_buckets(events)
    finally:
        postgres.stop()


async def test_demo_history_fills_every_day_of_the_last_month(
    settings: Settings, start_worker
) -> None:
    """What ``up --demo`` publishes before its live producer starts: events on every day of
    the last 30, none older, so the month and the rolling windows are not a single bar."""
    assert await publish_demo_history(settings, 3000, seed=7) == 3000
    start_worker(settings)
    now = datetime.now(UTC)

    async def days_counted() -> int:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(DISTINCT date_trunc('day', ts AT TIME ZONE 'UTC'))"
                    " FROM interaction_history"
                )
            )
        finally:
            await conn.close()

    await wait_until(lambda: _at_least(days_counted, 30), 120, 0.5, "a month of days")
    conn = await asyncpg.connect(settings.database_url)
    try:
        oldest, newest = await conn.fetchrow("SELECT min(ts), max(ts) FROM interaction_history")
    finally:
        await conn.close()
    assert oldest >= now - timedelta(days=DEMO_HISTORY_DAYS, minutes=1)
    assert newest >= now - timedelta(hours=6)


async def _at_least(value: Callable[[], Awaitable[int]], floor: int) -> bool:
    return await value() >= floor
