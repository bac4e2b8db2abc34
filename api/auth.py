"""API keys and roles: keys are random tokens shown once; only their SHA-256 is stored."""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum

import asyncpg

from core.db import STORE_ERRORS

KEY_PREFIX = "isk_"


class Role(IntEnum):
    """Roles in increasing power: viewer < editor < admin, each may do what a lower one may.

    ``PRODUCER`` stands below the chain so that every "at least viewer" check refuses it: it
    may only ingest, which editors and admins may too (``may_ingest``).
    """

    PRODUCER = 0
    VIEWER = 1
    EDITOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(
                f"role must be producer, viewer, editor or admin, got {name!r}"
            ) from None

    @property
    def may_ingest(self) -> bool:
        return self is Role.PRODUCER or self >= Role.EDITOR

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class ApiKey:
    role: Role
    tenant_id: str
    key_prefix: str


INSERT_KEY = """
INSERT INTO api_key (key_hash, key_prefix, role, tenant_id, label) VALUES ($1, $2, $3, $4, $5)
"""
SELECT_KEY = """
SELECT role, tenant_id, key_prefix FROM api_key WHERE key_hash = $1 AND revoked_at IS NULL
"""
SELECT_ACTIVE_KEYS = """
SELECT key_hash, role, tenant_id, key_prefix FROM api_key WHERE revoked_at IS NULL
"""
# Bumped by a trigger on every change to api_key (migration 0004): 0 before the first change.
CURRENT_KEY_VERSION = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM api_key_version"
REVOKE_KEY = """
UPDATE api_key SET revoked_at = now()
WHERE (key_hash = $1 OR key_prefix = $2) AND revoked_at IS NULL
  AND ($3::text IS NULL OR tenant_id = $3)
"""


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a fast unsalted hash is enough: there is nothing to
    # brute-force, and lookups stay one index probe.
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    """The first characters of a key: safe to log and to show in listings."""
    return key[: len(KEY_PREFIX) + 6]


def looks_like_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and 20 <= len(key) <= 100


async def create_key(
    pool: asyncpg.Pool, role: Role, tenant_id: str = "default", label: str | None = None
) -> str:
    """Create a key and return it: the only time it exists in clear."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await pool.execute(INSERT_KEY, hash_key(key), key_prefix(key), role.label, tenant_id, label)
    return key


async def revoke_key(pool: asyncpg.Pool, key_or_prefix: str, tenant_id: str | None = None) -> int:
    """Revoke a key given in full or by its prefix (within ``tenant_id`` if given).

    Returns how many keys were revoked.
    """
    result = await pool.execute(REVOKE_KEY, hash_key(key_or_prefix), key_or_prefix, tenant_id)
    return int(result.split()[-1])


async def find_key(pool: asyncpg.Pool, key: str) -> ApiKey | None:
    row = await pool.fetchrow(SELECT_KEY, hash_key(key))
    if row is None:
        return None
    return ApiKey(Role.parse(row["role"]), row["tenant_id"], row["key_prefix"])


class KeyCache:
    """Every active key's hash in memory: an unknown key is refused without asking Postgres.

    The key table is small (one row per issued key). It is re-read when ``api_key_version``
    moved (a trigger bumps it on any change to ``api_key``), checked at most every ``refresh``
    seconds whatever the request rate: a revoked key stops working within ``refresh`` seconds
    (or once Postgres is back, if it is down at that moment: the last copy keeps serving).
    """

    def __init__(self, refresh: float) -> None:
        self._refresh = refresh
        self._checked_at = -math.inf
        self._version: int | None = None
        self._keys: dict[str, ApiKey] | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Re-read on the next lookup: this process just changed a key."""
        self._checked_at = -math.inf

    async def lookup(self, pool: asyncpg.Pool | None, key: str) -> ApiKey | None:
        """The key's role and tenant, or None; raises a store error only before the first load."""
        if time.monotonic() - self._checked_at >= self._refresh or self._keys is None:
            await self._reload(pool)
        assert self._keys is not None
        return self._keys.get(hash_key(key))

    async def _reload(self, pool: asyncpg.Pool | None) -> None:
        async with self._lock:
            if time.monotonic() - self._checked_at < self._refresh and self._keys is not None:
                return  # another request reloaded while this one waited
            try:
                if pool is None:
                    raise OSError("Postgres is not connected yet")
                async with pool.acquire() as conn:
                    version = await conn.fetchval(CURRENT_KEY_VERSION)
                    if version != self._version or self._keys is None:
                        rows = await conn.fetch(SELECT_ACTIVE_KEYS)
                        self._keys = {
                            r["key_hash"]: ApiKey(
                                Role.parse(r["role"]), r["tenant_id"], r["key_prefix"]
                            )
                            for r in rows
                        }
                        self._version = version
            except STORE_ERRORS:
                if self._keys is None:
                    raise
                # Postgres down: the keys known a moment ago beat a 503 for every request.
            self._checked_at = time.monotonic()
