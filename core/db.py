"""Postgres connections and the versioned schema migrations (``core/migrations/NNNN_*.sql``)."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# Serialises concurrent migrators (a worker and the API starting together).
_MIGRATION_LOCK_ID = 0x1A7E_5A11

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every shipped migration, in version order."""
    folder = resources.files("core") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(found)


async def migrate(conn: Connection, up_to: int | None = None) -> list[str]:
    """Apply every migration not yet applied (up to version ``up_to``, when given), each in
    its own transaction; returns their names."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
    try:
        await conn.execute(_CREATE_VERSION_TABLE)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done or (up_to is not None and version > up_to):
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("migration applied version=%d name=%s", version, name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


# A connection as routes and sinks receive it: plain, or borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy


async def create_pool(
    dsn: str,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 60,
    command_timeout: float | None = None,
) -> asyncpg.Pool:
    """A pool whose connections are ready for this service (migrations applied first).

    ``connect_timeout`` bounds each connection attempt, ``command_timeout`` each statement.
    """
    conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        command_timeout=command_timeout,
    )
    return pool
