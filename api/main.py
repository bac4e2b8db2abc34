"""The FastAPI application: lifespan-owned clients, routes, health, metrics, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from prometheus_client import make_asgi_app
from redis.asyncio import Redis

from api.access import RequestLog
from api.admin import router as admin_router
from api.auth import KeyCache
from api.catalog import CatalogCache
from api.customer_routes import router as customer_router
from api.dashboard_routes import router as dashboard_router
from api.deps import STORE_ERRORS, Stores, StoresDep
from api.docs import add_docs
from api.errors import install_error_handlers
from api.ingest import router as ingest_router
from api.limits import AddressRateLimit, BodyLimit, RateLimits
from api.outcome_routes import router as outcome_router
from api.outcome_types import ClassesCache
from api.params import document_parameters
from api.publisher import EventPublisher
from api.redis_read import RedisReader
from api.routes import router
from core.config import Settings, get_settings
from core.db import SchemaError, create_pool
from core.mirror import MirrorCache

log = logging.getLogger(__name__)


POOL_SIZE = 10


async def _connect_postgres(stores: Stores, settled: asyncio.Event) -> None:
    """Open the pool, retrying while Postgres is down or its schema is not current: the API
    starts (and /health answers) anyway. The API never migrates: it may run as a role that
    cannot (docs/operations.md "Security"); ``interaction-summary migrate`` does. ``settled`` is set once
    connected, or once Postgres answered that the schema is not usable (waiting for
    ``migrate`` must not hold up start-up)."""
    settings = stores.settings
    delay = 0.5
    while stores.pool is None:
        try:
            stores.pool = await create_pool(
                settings.database_url,
                min_size=1,
                max_size=POOL_SIZE,
                connect_timeout=5,
                # Client-side backstop, in case the server never answers the cancel.
                command_timeout=settings.api_statement_timeout_seconds + 5,
                run_migrations=False,
                statement_timeout=settings.api_statement_timeout_seconds,
                acquire_timeout=settings.api_pool_acquire_timeout_seconds,
                # The API sets nothing on a session that outlives its statement (SET LOCAL
                # only, advisory locks by transaction): no reset round trip per request.
                reset_sessions=False,
            )
        except SchemaError as exc:
            settled.set()
            log.error("postgres schema not usable, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)  # one cheap query: notice `migrate` soon
        except (*STORE_ERRORS, TimeoutError) as exc:
            log.warning("postgres not reachable yet, retrying in %.1fs error=%r", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    settled.set()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    limits = RateLimits(
        settings.api_rate_limit_per_key,
        settings.api_rate_limit_per_address,
        settings.api_rate_limit_per_producer_key,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        stores = Stores(
            settings,
            redis,
            RedisReader(redis, settings.redis_prefix),
            KeyCache(settings.api_key_cache_seconds),
            CatalogCache(settings.catalog_refresh_seconds),
            limits,
            heavy_reads=asyncio.Semaphore(POOL_SIZE // 2),
            classes=ClassesCache(settings.catalog_refresh_seconds),
            mirror=MirrorCache(settings.api_redis_check_seconds),
        )
        app.state.stores = stores
        publisher = EventPublisher(
            settings.kafka_bootstrap_servers,
            settings.topic,
            settings.ingest_publish_timeout_seconds,
        )
        app.state.publisher = publisher
        settled = asyncio.Event()
        connecting = asyncio.create_task(_connect_postgres(stores, settled))
        producing = publisher.start()
        with suppress(asyncio.TimeoutError):  # a slow Postgres must not block start-up
            await asyncio.wait_for(settled.wait(), timeout=10)
        with suppress(asyncio.TimeoutError):  # nor a broker that is away: ingestion 503s
            await asyncio.wait_for(
                asyncio.shield(producing), timeout=settings.ingest_publish_timeout_seconds
            )
        yield
        connecting.cancel()
        await publisher.stop()
        if stores.pool is not None:
            await stores.pool.close()
        await redis.aclose()

    app = FastAPI(
        title="interaction-summary",
        version="0.1.0",
        description="Real-time interaction counters per action, treatment, channel and customer.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        docs_url=None,  # served by api.docs from local files, or not at all
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(customer_router)
    app.include_router(admin_router)
    app.include_router(outcome_router)
    app.include_router(ingest_router)
    _add_operational_routes(app)
    if settings.api_docs:
        add_docs(app)
    app.mount("/metrics", make_asgi_app())
    # Outermost last: request id, access log and metrics; rate per address; body size.
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(AddressRateLimit, limits=limits)
    app.add_middleware(RequestLog)
    app.include_router(dashboard_router)
    document_parameters(app)
    return app


def _add_operational_routes(app: FastAPI) -> None:
    @app.get("/health", tags=["operations"], summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="Broker, Postgres and Redis are reachable")
    async def ready(stores: StoresDep) -> ORJSONResponse:
        checks = await asyncio.gather(
            _check_postgres(stores), _check_redis(stores), _check_kafka(stores.settings)
        )
        body: dict[str, Any] = dict(zip(("postgres", "redis", "kafka"), checks, strict=True))
        ok = all(v == "ok" for v in body.values())
        return ORJSONResponse(
            {"status": "ready" if ok else "unavailable", "checks": body},
            status_code=200 if ok else 503,
        )


async def _check_postgres(stores: Stores) -> str:
    if stores.pool is None:
        return "not connected"
    try:
        await asyncio.wait_for(stores.pool.fetchval("SELECT 1"), timeout=2)
    except (*STORE_ERRORS, TimeoutError) as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


async def _check_redis(stores: Stores) -> str:
    try:
        await stores.redis.ping()
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


async def _check_kafka(settings: Settings) -> str:
    host, _, port = settings.kafka_bootstrap_servers.split(",")[0].strip().rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout=2)
    except (OSError, TimeoutError, ValueError) as exc:
        return f"unreachable: {type(exc).__name__}"
    writer.close()
    return "ok"


app = create_app()
