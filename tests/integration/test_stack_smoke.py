"""The whole write and read path end to end: worker and API subprocesses on real servers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson

from api.auth import ApiKey, Role, create_key, find_key, key_prefix
from api.catalog import fetch_catalog
from core.config import Settings
from tests.integration.stores import postgres_buckets
from tests.support import ApiProcess, ServiceProcess, produce, run_cli, wait_until


def events(n: int, now: datetime) -> list[dict[str, str]]:
    kinds = ("impression", "impression", "impression", "click", "convert")
    return [
        {
            "id": f"smoke-{i}",
            "timestamp": (now - timedelta(seconds=i)).isoformat(),
            "customerId": f"C-{i % 7}",
            "actionId": f"off_{i % 3}",
            "type": kinds[i % len(kinds)],
        }
        for i in range(n)
    ]


async def test_produced_events_show_up_in_postgres_and_the_api(
    settings: Settings,
    pool: asyncpg.Pool,
    start_worker: Callable[[Settings], ServiceProcess],
    start_api: Callable[[Settings], Awaitable[ApiProcess]],
) -> None:
    start_worker(settings)
    api = await start_api(settings)
    key = await create_key(pool, Role.VIEWER)

    await produce(settings, events(100, datetime.now(UTC)))

    await wait_until(
        lambda: pool.fetchval("SELECT count(*) = 100 FROM interaction_history"),
        timeout=90,
        message="the worker did not store 100 events",
    )
    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {key}"}
    ) as client:

        async def summary() -> dict[str, object] | None:
            # All-time: no period boundary can fall between producing and asking.
            response = await client.get("/api/v1/interaction-summary", params={"days": 36500})
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            rows = body["summary"]
            assert isinstance(rows, list)
            return body if sum(row["total"] for row in rows) == 100 else None

        body = await wait_until(summary, timeout=30, message="the API never showed 100 events")
    rows = {row["id"]: row for row in body["summary"]}  # type: ignore[union-attr]
    assert set(rows) == {"off_0", "off_1", "off_2"}
    assert sum(row["impression"] for row in rows.values()) == 60
    assert sum(row["click"] for row in rows.values()) == 20
    assert sum(row["convert"] for row in rows.values()) == 20


async def test_cli_loads_a_catalog_publishes_a_file_manages_keys_and_rebuilds(
    settings: Settings,
    pool: asyncpg.Pool,
    start_worker: Callable[[Settings], ServiceProcess],
    tmp_path: Path,
) -> None:
    start_worker(settings)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        '{"actions": [{"id": "off_0", "name": "Gold card", "priority": 5}],'
        ' "channels": [{"id": "ch_web", "name": "Web", "channelType": "web"}]}'
    )
    loaded = await run_cli(settings, "catalog", "load", str(catalog), "--tenant", "acme")
    assert loaded.returncode == 0, loaded.stderr
    assert (await fetch_catalog(pool, "acme")).actions["off_0"]["name"] == "Gold card"

    lines = [orjson.dumps(event) for event in events(30, datetime.now(UTC))]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\n".join([*lines[:10], b"not json", *lines[10:]]) + b"\n")
    published = await run_cli(settings, "produce", str(jsonl), "--quiet")
    assert published.returncode == 0, published.stderr
    from_stdin = await run_cli(settings, "produce", "-", "--quiet", stdin=lines[0] + b"\n")
    assert from_stdin.returncode == 0, from_stdin.stderr  # a duplicate: counted once
    synthetic = await run_cli(settings, "produce", "--count", "20", "--quiet")
    assert synthetic.returncode == 0, synthetic.stderr
    await wait_until(
        lambda: pool.fetchval("SELECT count(*) = 50 FROM interaction_history"),
        timeout=90,
        message="30 file events and 20 synthetic ones were not all counted",
    )

    created = await run_cli(settings, "keys", "create", "--role", "editor", "--tenant", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert await find_key(pool, key) == ApiKey(Role.EDITOR, "acme", key_prefix(key))
    revoked = await run_cli(settings, "keys", "revoke", key_prefix(key))
    assert revoked.returncode == 0, revoked.stderr
    assert await find_key(pool, key) is None
    assert (await run_cli(settings, "keys", "revoke", key_prefix(key))).returncode == 1

    # the rebuild writes one shard where the worker wrote its own: compare the buckets (sums)
    before = await postgres_buckets(settings.database_url)
    rebuilt = await run_cli(settings, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert await postgres_buckets(settings.database_url) == before
