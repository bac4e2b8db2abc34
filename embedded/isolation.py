"""A corner of shared servers of one's own: a database, a Redis key prefix, topics and a
consumer group that nobody else uses, so tests and benchmark runs never see each other's data.

``isolated_settings`` is what the test fixture ``make_settings`` and the benchmarks'
``services.fresh_settings`` hand out; everything it made is dropped or deleted on exit.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis

from core.config import Settings
from core.db import create_pool
from embedded.servers import EmbeddedServers
from streams.topics import ensure_topics, service_topics


def database_dsn(admin_dsn: str, database: str) -> str:
    """``admin_dsn`` pointing at another database on the same server."""
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{database}"))


async def create_database(admin_dsn: str, label: str = "test") -> str:
    """A new, empty database ``is_<label>_<random>`` on the server of ``admin_dsn`` (no
    migration); its name."""
    database = f"is_{label}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    return database


async def drop_databases(admin_dsn: str, databases: list[str]) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        for database in databases:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


async def delete_keys(redis_url: str, prefix: str) -> None:
    """Every Redis key under ``prefix:``."""
    redis = Redis.from_url(redis_url)
    try:
        batch = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=5000)]
        for i in range(0, len(batch), 5000):
            await redis.unlink(*batch[i : i + 5000])
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def isolated_settings(
    servers: EmbeddedServers,
    work_dir: Path,
    *,
    label: str = "test",
    topics: bool = True,
    **overrides: Any,
) -> AsyncIterator[Settings]:
    """Settings with a migrated database, a Redis prefix, topics (unless not ``topics``) and a
    consumer group of their own; ``overrides`` replace any value. The database is dropped and
    its keys in the shared Redis deleted on exit (topics stay: the embedded broker forgets them
    when it stops)."""
    database = await create_database(servers.database_url, label)
    uid = database.removeprefix(f"is_{label}_")
    dsn = database_dsn(servers.database_url, database)
    settings: Settings | None = None
    try:
        pool = await create_pool(dsn, min_size=1, max_size=1)  # applies the migrations
        await pool.close()
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": servers.kafka_bootstrap,
            "database_url": dsn,
            "redis_url": servers.redis_url,
            "topic": f"interactions-{label}-{uid}",
            "dlq_topic": f"interactions-{label}-{uid}.dlq",
            "consumer_group": f"interaction-summary-{label}-{uid}",
            "redis_prefix": f"t{uid}",
            "worker_metrics_port": 0,
            "worker_data_dir": work_dir / f"worker-{uid}",
        }
        settings = Settings(**{**values, **overrides})
        if topics:
            await ensure_topics(settings.kafka_bootstrap_servers, service_topics(settings))
        yield settings
    finally:
        if settings is not None:
            await delete_keys(servers.redis_url, settings.redis_prefix)
        await drop_databases(servers.database_url, [database])
