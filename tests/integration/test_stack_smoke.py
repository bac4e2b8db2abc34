"""The whole write and read path end to end: worker and API subprocesses on real servers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from api.auth import Role, create_key
from core.config import Settings
from tests.support import ApiProcess, ServiceProcess, produce, wait_until


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
            response = await client.get("/api/v1/interaction-summary", params={"days": 1})
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
