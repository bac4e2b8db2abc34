"""Servers, a fresh database and the service subprocesses of one benchmark run.

Servers come from ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` / ``REDIS_URL`` when set
(``DATABASE_URL`` must be allowed to create databases), else they are started embedded
from their wheels (``embedded.servers``) under a temporary directory and stopped at the end.
Embedded Postgres runs with its normal, durable settings (fsync on): a benchmark measures
the product, not a throwaway test cluster.

The worker and the API run as the same CLI commands docker-compose runs, as subprocesses
with the environment ``embedded.processes.service_env`` gives (as tests/support.py does).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis

from bench.report import listening_pids, pids_named
from cli.synthetic import Catalog
from core.config import Settings
from core.db import create_pool
from embedded.isolation import isolated_settings
from embedded.processes import (
    Process,
    answers_health,
    cli_argv,
    free_port,
    service_env,
    wait_ready,
)
from embedded.servers import EmbeddedServers, embedded_servers

# The bootstrap address of runs that need no broker (nothing connects to it).
_NO_KAFKA = "unused:9"


@contextlib.contextmanager
def servers(*, kafka: bool = True, state_dir: Path | None = None) -> Iterator[EmbeddedServers]:
    """The run's servers: from the environment, else embedded (Kafka only if ``kafka``)."""
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="is-bench-")))
        kafka_url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or (None if kafka else _NO_KAFKA)
        started = stack.enter_context(
            embedded_servers(
                state_dir,
                kafka_bootstrap=kafka_url,
                database_url=os.environ.get("DATABASE_URL"),
                redis_url=os.environ.get("REDIS_URL"),
            )
        )
        yield started


def describe(servers: EmbeddedServers) -> dict[str, Any]:
    """Where each server came from (embedded or environment), for the results file."""
    embedded = {s.name for s in servers.started}
    where = {
        name: "embedded" if name in embedded else "from environment"
        for name in ("kafka", "postgres", "redis")
    }
    if servers.kafka_bootstrap == _NO_KAFKA:
        where["kafka"] = "not used"
    return where


def _port(url: str, default: int) -> int:
    first = url.split(",")[0]
    return urlsplit(first if "//" in first else f"//{first}").port or default


def pid_of(process: Process) -> int:
    """The pid of a process this benchmark started and is measuring (started, so it has one)."""
    if process.pid is None:
        raise RuntimeError(f"{process.name} is not running: nothing to measure")
    return process.pid


def server_pids(servers: EmbeddedServers) -> dict[str, list[int]]:
    """The root pid(s) of each server (``postgres``, ``redis``, ``broker``) for CPU accounting.

    Embedded: the process we started. From the environment: the local process listening on
    the URL's port, else (Postgres only) every ``postgres`` process; empty when the server
    cannot be seen (another PID namespace, a container): its CPU is then not counted.
    """
    started = {s.name: s.pid for s in servers.started if s.pid is not None}
    pids: dict[str, list[int]] = {}
    for name, started_as, url, default_port in (
        ("postgres", "postgres", servers.database_url, 5432),
        ("redis", "redis", servers.redis_url, 6379),
        ("broker", "kafka", servers.kafka_bootstrap, 9092),
    ):
        if started_as in started:
            pids[name] = [started[started_as]]
        elif servers.kafka_bootstrap == _NO_KAFKA and name == "broker":
            pids[name] = []
        else:
            found = listening_pids(_port(url, default_port))
            pids[name] = found or (pids_named("postgres") if name == "postgres" else [])
    return pids


# The Postgres settings a result file records beside the server versions.
_POSTGRES_SETTINGS = (
    "shared_buffers",
    "work_mem",
    "max_parallel_workers_per_gather",
    "max_wal_size",
    "fsync",
    "synchronous_commit",
)


async def server_versions(database_url: str, redis_url: str) -> dict[str, str]:
    """The Postgres and Redis versions and the Postgres settings that shape the figures."""
    conn = await asyncpg.connect(database_url)
    try:
        pg = await conn.fetchval("SHOW server_version")
        pg_settings = {name: await conn.fetchval(f"SHOW {name}") for name in _POSTGRES_SETTINGS}
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        info = await redis.info("server")
    finally:
        await redis.aclose()
    return {
        "postgres_version": str(pg),
        "postgres_settings": str(pg_settings),
        "redis_version": str(info.get("redis_version")),
    }


@contextlib.asynccontextmanager
async def fresh_settings(
    servers: EmbeddedServers, name: str, work_dir: Path, *, topics: bool = True, **overrides: Any
) -> AsyncIterator[Settings]:
    """``embedded.isolation.isolated_settings`` labelled ``bench_<name>``, without rate limits:
    a benchmark measures capacity from one key and one address, and limits would cap it."""
    async with isolated_settings(
        servers,
        work_dir,
        label=f"bench_{name}",
        topics=topics,
        **{
            "api_rate_limit_per_key": "",
            "api_rate_limit_per_producer_key": "",
            "api_rate_limit_per_address": "",
            **overrides,
        },
    ) as settings:
        yield settings


def _spawn(name: str, args: list[str], settings: Settings, log_dir: Path) -> Process:
    """A worker or API subprocess (``python -m cli <command>``) logging to a file."""
    return Process(
        name, cli_argv(*args), log_dir / f"{name}.log", env=service_env(settings)
    ).start()


@contextlib.contextmanager
def worker(settings: Settings, log_dir: Path) -> Iterator[Process]:
    """``interaction-summary worker``, stopped (SIGTERM) on exit."""
    service = _spawn("worker", ["worker", "--loglevel", "warning"], settings, log_dir)
    try:
        yield service
    finally:
        service.stop()


@contextlib.asynccontextmanager
async def api(settings: Settings, log_dir: Path, wait: float = 60.0) -> AsyncIterator[Process]:
    """``interaction-summary api`` on a free port, yielded once GET /health answers."""
    port = free_port()
    service = _spawn(
        "api", ["api", "--port", str(port), "--log-level", "warning"], settings, log_dir
    )
    service.url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(service, lambda: answers_health(service.url), wait)
        yield service
    finally:
        service.stop()


async def viewer_key(settings: Settings, tenant: str = "default") -> str:
    """A new viewer key of ``tenant``."""
    from api.auth import Role, create_key

    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return await create_key(pool, Role.VIEWER, tenant, "benchmark")
    finally:
        await pool.close()


async def catalog_and_key(settings: Settings, catalog: Catalog, tenant: str = "default") -> str:
    """Load ``catalog`` for ``tenant`` and return a new viewer key of that tenant."""
    from api.auth import Role, create_key
    from api.catalog import CatalogDocument, load_catalog

    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await load_catalog(pool, CatalogDocument.model_validate(catalog.document()), tenant)
        return await create_key(pool, Role.VIEWER, tenant, "benchmark")
    finally:
        await pool.close()
