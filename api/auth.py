"""API keys and roles: keys are random tokens shown once; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum

import asyncpg

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
    """Remembers key lookups (hits and misses) for a few seconds: one query per key, not per request.

    A revoked key therefore stops working within ``ttl`` seconds (or once Postgres is back,
    if it is down at that moment).
    """

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}

    async def lookup(self, pool: asyncpg.Pool, key: str) -> ApiKey | None:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = await find_key(pool, key)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if cached is not None:
                return cached[1]  # while Postgres is down, a known answer beats a 503
            raise
        if len(self._entries) > 10_000:  # bounded: unknown keys must not grow memory forever
            self._entries.clear()
        self._entries[digest] = (now + self._ttl, found)
        return found
