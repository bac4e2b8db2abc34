"""Dependencies that routes declare: stores, the caller's key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from api.access import CALLER
from api.auth import ApiKey, KeyCache, Role, looks_like_key
from api.catalog import CatalogCache
from api.errors import ApiError
from api.limits import RateLimits, too_many
from api.outcome_types import ClassesCache
from api.params import DOCUMENTED_BY
from api.recent import Recent
from api.redis_read import RedisReader
from core.config import Settings
from core.db import STORE_ERRORS as STORE_ERRORS  # re-exported: the routes catch it from here
from core.mirror import MirrorCache

log = logging.getLogger(__name__)


@dataclass
class Stores:
    """Clients created once in the app's lifespan; ``pool`` is None until Postgres answers."""

    settings: Settings
    redis: Redis
    reader: RedisReader
    keys: KeyCache
    catalog: CatalogCache
    limits: RateLimits
    pool: asyncpg.Pool | None = None
    # Each tenant's outcome classification (api.outcome_types).
    classes: ClassesCache = field(default_factory=lambda: ClassesCache(1.0))
    # Which Redis state Postgres vouches for, re-read at most every api_redis_check_seconds.
    mirror: MirrorCache = field(default_factory=lambda: MirrorCache(0.5))
    # Reads that may scan without an index bound (rolling windows, raw history) share half the
    # pool, so index-served reads always find a connection.
    heavy_reads: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(5))
    # Summary bodies built from unchanged Redis pages (see api.answers.summary).
    bodies: Recent[tuple[object, object, object, bytes]] = field(default_factory=lambda: Recent(64))

    def require_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise ApiError(
                503, "DATABASE_UNAVAILABLE", "Postgres is not reachable yet; retry shortly"
            )
        return self.pool


async def get_stores(request: Request) -> Stores:
    # async: FastAPI runs a plain def dependency in a worker thread, a hop per request.
    stores: Stores = request.app.state.stores
    return stores


StoresDep = Annotated[Stores, Depends(get_stores)]


def _presented_key(authorization: str | None, x_api_key: str | None) -> str:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "INVALID_AUTHORIZATION", "use 'Authorization: Bearer <api key>'")
        return token.strip()
    if x_api_key:
        return x_api_key.strip()
    raise ApiError(401, "MISSING_API_KEY", "send 'Authorization: Bearer <api key>' or 'X-API-Key'")


class AuthHeaders(BaseModel):
    """The headers ``current_key`` reads (documented in OpenAPI from this model, api.params)."""

    authorization: str | None = Field(None, description="Bearer <api key>")
    x_api_key: str | None = Field(
        None, alias="x-api-key", description="the API key, instead of Authorization"
    )
    x_tenant_id: str | None = Field(
        None, alias="x-tenant-id", description="must match the key's tenant if sent"
    )


async def current_key(request: Request) -> ApiKey:
    """The caller's key, read from the headers of ``AuthHeaders`` (by hand: FastAPI's header
    parameters and nested dependencies were ~65 µs a request, api.params)."""
    headers = request.headers
    stores: Stores = request.app.state.stores
    key = _presented_key(headers.get("authorization"), headers.get("x-api-key"))
    if not looks_like_key(key):
        raise ApiError(401, "INVALID_API_KEY", "the API key is malformed")
    try:
        found = await stores.keys.lookup(stores.pool, key)
    except STORE_ERRORS as exc:
        log.warning("api key lookup failed error=%r", exc)
        raise ApiError(503, "DATABASE_UNAVAILABLE", "cannot check the API key right now") from None
    if found is None:
        raise ApiError(401, "INVALID_API_KEY", "the API key is unknown or revoked")
    caller = CALLER.get()
    if caller is not None:  # for the access log
        caller.update(key_prefix=found.key_prefix, role=found.role.label, tenant=found.tenant_id)
    wait = stores.limits.check_key(found.key_prefix, producer=found.role is Role.PRODUCER)
    if wait is not None:
        raise ApiError(*too_many(wait, "API key"))
    tenant = headers.get("x-tenant-id")
    if tenant is not None and tenant != found.tenant_id:
        raise ApiError(403, "TENANT_MISMATCH", "X-Tenant-Id does not match the API key's tenant")
    return found


DOCUMENTED_BY[current_key] = (AuthHeaders, "header")


def actor(key: ApiKey) -> dict[str, str]:
    """Who made a change, for the audit log: the key's prefix (never the key), role, tenant."""
    return {"key_prefix": key.key_prefix, "role": key.role.label, "tenant": key.tenant_id}


def require_role(minimum: Role) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency that lets through keys of at least ``minimum`` (one level: it calls
    ``current_key`` itself rather than depending on it)."""

    async def check(request: Request) -> ApiKey:
        key = await current_key(request)
        if key.role < minimum:
            raise ApiError(
                403,
                "FORBIDDEN",
                f"this needs role {minimum.label}; the key has role {key.role.label}",
            )
        return key

    DOCUMENTED_BY[check] = (AuthHeaders, "header")
    return check


Viewer = Annotated[ApiKey, Depends(require_role(Role.VIEWER))]
