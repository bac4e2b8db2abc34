"""Real servers for the test session, and a clean slate for every test.

- ``servers`` (session): Kafka (Tansu), Postgres and Redis, each started embedded from its
  wheel unless ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` / ``REDIS_URL`` points at one.
  ``DATABASE_URL`` must then be a DSN allowed to CREATE and DROP databases.
- ``make_settings`` (per test): each call gives ``Settings`` with a database of its own
  (migrated), a Redis key prefix, topics (created, 8 partitions) and a consumer group of
  its own, so tests never see each other's data. Databases are dropped and keys deleted after.
- ``start_worker`` / ``start_api``: service subprocesses, stopped after the test; their logs
  are printed when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from core.config import Settings
from core.db import create_pool
from core.roles import grant_api_role
from embedded.isolation import create_database, database_dsn, drop_databases, isolated_settings
from embedded.servers import EmbeddedServers, embedded_servers
from tests.support import ApiProcess, ServiceProcess
from tests.support import start_api as _start_api
from tests.support import start_worker as _start_worker


class MakeSettings(Protocol):
    def __call__(self, **overrides: Any) -> Awaitable[Settings]: ...


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration talks to real servers: mark it so ``-m`` can pick."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServers]:
    """The session's Kafka, Postgres and Redis (embedded unless given by environment)."""
    with embedded_servers(
        tmp_path_factory.mktemp("servers"),
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        database_url=os.environ.get("DATABASE_URL"),
        redis_url=os.environ.get("REDIS_URL"),
        throwaway=True,
    ) as started:
        yield started


@pytest.fixture
async def empty_database(servers: EmbeddedServers) -> AsyncIterator[str]:
    """The DSN of a database of its own with no migration applied, dropped afterwards."""
    database = await create_database(servers.database_url)
    yield database_dsn(servers.database_url, database)
    await drop_databases(servers.database_url, [database])


@pytest.fixture
async def make_settings(servers: EmbeddedServers, tmp_path: Path) -> AsyncIterator[MakeSettings]:
    """A factory: ``await make_settings(**overrides)`` -> fresh, isolated ``Settings``
    (``embedded.isolation.isolated_settings``), all dropped after the test."""
    async with contextlib.AsyncExitStack() as made:

        async def make(**overrides: Any) -> Settings:
            return await made.enter_async_context(isolated_settings(servers, tmp_path, **overrides))

        yield make


class ApiRole(Protocol):
    def __call__(self, settings: Settings) -> Awaitable[Settings]: ...


@pytest.fixture
async def as_api_role(servers: EmbeddedServers) -> AsyncIterator[ApiRole]:
    """``await as_api_role(settings)`` -> the same settings, with a ``DATABASE_URL`` of a role of
    its own that has only the API's grants (core.roles), for running the API least-privileged.
    The role is cluster-wide: dropped after the test."""
    made: list[tuple[str, str]] = []

    async def make(settings: Settings) -> Settings:
        role = f"is_api_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(servers.database_url)
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN")
        finally:
            await admin.close()
        made.append((role, settings.database_url))
        conn = await asyncpg.connect(settings.database_url)
        try:
            await grant_api_role(conn, role)
        finally:
            await conn.close()
        parts = urlsplit(settings.database_url)
        netloc = f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return settings.model_copy(
            update={"database_url": urlunsplit(parts._replace(netloc=netloc))}
        )

    yield make

    for role, dsn in made:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP OWNED BY {role}")
        finally:
            await conn.close()
        admin = await asyncpg.connect(servers.database_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
            )
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await admin.close()


@pytest.fixture
async def settings(make_settings: MakeSettings) -> Settings:
    """One test's isolated settings (see ``make_settings``)."""
    return await make_settings()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's own (migrated) database."""
    db = await create_pool(settings.database_url, min_size=1, max_size=4)
    yield db
    await db.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """A client of the session's Redis; use keys under ``settings.redis_prefix`` only."""
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[Settings], ServiceProcess]]:
    """``start_worker(settings)`` -> a running worker subprocess, stopped after the test."""
    started: list[ServiceProcess] = []

    def start(settings: Settings, name: str | None = None) -> ServiceProcess:
        worker = _start_worker(settings, tmp_path, name or f"worker-{len(started) + 1}")
        started.append(worker)
        return worker

    yield start
    _stop_all(request, started)


@pytest.fixture
def start_api(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[Settings], Awaitable[ApiProcess]]]:
    """``await start_api(settings)`` -> a healthy API subprocess (``.url``), stopped after the test."""
    started: list[ServiceProcess] = []

    async def start(settings: Settings, name: str | None = None) -> ApiProcess:
        api = await _start_api(settings, tmp_path, name or f"api-{len(started) + 1}")
        started.append(api)
        return api

    yield start
    _stop_all(request, started)


def _stop_all(request: pytest.FixtureRequest, processes: list[ServiceProcess]) -> None:
    for process in processes:
        process.stop()
    if _failed(request):
        for process in processes:
            print(f"\n----- {process.name} log ({process.log_path}) -----\n{process.log_tail(80)}")
