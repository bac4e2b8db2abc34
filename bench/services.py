"""Servers, a fresh database and the service subprocesses of one benchmark run.

Servers come from ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` / ``REDIS_URL`` when set
(``DATABASE_URL`` must be allowed to create databases), else they are started embedded
from their wheels (``cli.embedded``) under a temporary directory and stopped at the end.
Embedded Postgres runs with its normal, durable settings (fsync on): a benchmark measures
the product, not a throwaway test cluster.

The worker and the API run as the same CLI commands docker-compose runs, as subprocesses
with the environment ``core.config.to_env`` gives (as tests/support.py does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from redis.asyncio import Redis

from bench.report import listening_pids, pids_named
from bench.synthetic import Catalog
from cli.embedded import EmbeddedServers, embedded_servers, free_port
from cli.topics import ensure_topics, service_topics
from core.config import Settings, to_env
from core.db import create_pool

_SERVICE_ENV_PREFIXES = (
    "INTERACTION_SUMMARY_",
    "KAFKA_BOOTSTRAP_SERVERS",
    "DATABASE_URL",
    "REDIS_URL",
)


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


def server_pids(servers: EmbeddedServers) -> dict[str, list[int]]:
    """The root pid(s) of each server (``postgres``, ``redis``, ``broker``) for CPU accounting.

    Embedded: the process we started. From the environment: the local process listening on
    the URL's port, else (Postgres only) every ``postgres`` process; empty when the server
    cannot be seen (another PID namespace, a container): its CPU is then not counted.
    """
    started = {s.name: s.process.pid for s in servers.started}
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


async def server_versions(settings: Settings) -> dict[str, str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        pg = await conn.fetchval("SHOW server_version")
        pg_settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "fsync")
        }
    finally:
        await conn.close()
    redis = Redis.from_url(settings.redis_url)
    try:
        info = await redis.info("server")
    finally:
        await redis.aclose()
    return {
        "postgres_version": str(pg),
        "postgres_settings": str(pg_settings),
        "redis_version": str(info.get("redis_version")),
    }


def _database_dsn(admin_dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def fresh_settings(
    servers: EmbeddedServers, name: str, work_dir: Path, *, topics: bool = True, **overrides: Any
) -> AsyncIterator[Settings]:
    """Settings with a migrated database, Redis prefix, topics and group of their own.

    The database is dropped and the keys deleted on exit.
    """
    uid = uuid.uuid4().hex[:8]
    database = f"bench_{name}_{uid}"
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": servers.kafka_bootstrap,
        "database_url": _database_dsn(servers.database_url, database),
        "redis_url": servers.redis_url,
        "topic": f"bench-{name}-{uid}",
        "dlq_topic": f"bench-{name}-{uid}.dlq",
        "consumer_group": f"bench-{name}-{uid}",
        "redis_prefix": f"bench-{name}-{uid}",
        "worker_metrics_port": 0,
        "worker_data_dir": work_dir / f"worker-{uid}",
        # A benchmark measures capacity from one key and one address: rate limits would cap it.
        "api_rate_limit_per_key": "",
        "api_rate_limit_per_address": "",
    }
    settings = Settings(**{**values, **overrides})
    try:
        pool = await create_pool(settings.database_url, min_size=1, max_size=1)  # migrates
        await pool.close()
        if topics:
            await ensure_topics(settings.kafka_bootstrap_servers, service_topics(settings))
        yield settings
    finally:
        await _forget(servers, settings, database)


async def _forget(servers: EmbeddedServers, settings: Settings, database: str) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        batch = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=5000)]
        for i in range(0, len(batch), 5000):
            await redis.unlink(*batch[i : i + 5000])
    finally:
        await redis.aclose()
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


def service_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
    env.update(to_env(settings))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Service:
    """A worker or API subprocess (``python -m cli <command>``) logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn(name: str, args: list[str], settings: Settings, log_dir: Path) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            env=service_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Service(name, process, log_path)


@contextlib.contextmanager
def worker(settings: Settings, log_dir: Path) -> Iterator[Service]:
    """``interaction-summary worker``, stopped (SIGTERM) on exit."""
    service = _spawn("worker", ["worker", "--loglevel", "warning"], settings, log_dir)
    try:
        yield service
    finally:
        service.stop()


@contextlib.asynccontextmanager
async def api(settings: Settings, log_dir: Path, wait: float = 60.0) -> AsyncIterator[Service]:
    """``interaction-summary api`` on a free port, yielded once GET /health answers."""
    port = free_port()
    service = _spawn(
        "api", ["api", "--port", str(port), "--log-level", "warning"], settings, log_dir
    )
    service.url = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(service, wait)
        yield service
    finally:
        service.stop()


async def _wait_healthy(service: Service, wait: float) -> None:
    deadline = time.monotonic() + wait
    async with httpx.AsyncClient(base_url=service.url, timeout=2.0) as client:
        while True:
            if not service.running:
                raise RuntimeError(f"api exited while starting:\n{service.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"api not healthy after {wait:.0f}s:\n{service.log_tail()}")
            await asyncio.sleep(0.1)


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
