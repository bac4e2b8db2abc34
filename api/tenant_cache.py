"""Per-tenant documents read from Postgres and kept in the API process until they change.

A document (a tenant's catalog, its outcome-type classifications) is re-read when its
version, a sequence every change bumps, moved; the version is checked at most every
``refresh`` seconds. If Postgres is unreachable the last copy keeps serving (Redis-backed
answers still carry names and classes), or ``default`` when there is none.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg

from core.db import STORE_ERRORS

V = TypeVar("V")


class TenantCache(Generic[V]):
    def __init__(
        self,
        refresh: float,
        version_sql: str,
        fetch: Callable[[asyncpg.Pool, str], Awaitable[V]],
        default: V,
    ) -> None:
        self._refresh = refresh
        self._version_sql = version_sql
        self._fetch = fetch
        self._default = default
        self._checked_at = 0.0
        self._version: int | None = None
        self._by_tenant: dict[str, V] = {}

    def invalidate(self, tenant: str) -> None:
        """This process changed the tenant's document: read it again on the next ``get``."""
        self._by_tenant.pop(tenant, None)

    async def get(self, pool: asyncpg.Pool | None, tenant: str) -> V:
        """The tenant's document; with no pool (Postgres not open yet), the last copy."""
        if pool is None:
            return self._by_tenant.get(tenant, self._default)
        now = time.monotonic()
        try:
            if now - self._checked_at >= self._refresh:
                version = await pool.fetchval(self._version_sql)
                self._checked_at = now
                if version != self._version:
                    self._version = version
                    self._by_tenant.clear()
            if tenant not in self._by_tenant:
                self._by_tenant[tenant] = await self._fetch(pool, tenant)
        except STORE_ERRORS:
            return self._by_tenant.get(tenant, self._default)
        return self._by_tenant[tenant]
