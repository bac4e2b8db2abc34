"""Postgres connections and the versioned schema migrations (``core/migrations/NNNN_*.sql``)."""

from __future__ import annotations

import hashlib
import logging
from importlib import resources

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

# What a store that is down or refusing looks like to a caller: a connection that fails
# (OSError), an error Postgres reports, or a connection the driver lost. One definition for
# every reader that answers 503 or falls back instead of failing.
STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

log = logging.getLogger(__name__)

# Serialises concurrent migrators (a worker and the API starting together).
_MIGRATION_LOCK_ID = 0x1A7E_5A11

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum   text
)
"""
# Databases made before checksums were recorded have no such column: added in place, and the
# files as they are now are taken as the ones that were applied (recorded once).
_ADD_CHECKSUM = "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text"
_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
_RECORD = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
_BACKFILL = "UPDATE schema_migrations SET checksum = $2 WHERE version = $1 AND checksum IS NULL"


class SchemaError(RuntimeError):
    """The database's schema is not the one this code was shipped with; the message says how."""


class MigrationChanged(SchemaError):
    """An applied migration file was edited afterwards: refusing to run against that schema."""


class SchemaNotReady(SchemaError):
    """Migrations are pending (the API waits for ``interaction-summary migrate``)."""


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def migration_files() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every shipped migration, in version order."""
    folder = resources.files("core") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(found)


def _check_unchanged(applied: list[asyncpg.Record]) -> None:
    """Raise MigrationChanged if an applied migration's file differs from what was applied."""
    shipped = {version: (name, checksum(sql)) for version, name, sql in migration_files()}
    for row in applied:
        name, digest = shipped.get(row["version"], (None, None))
        if row["checksum"] is not None and digest is not None and row["checksum"] != digest:
            raise MigrationChanged(
                f"migration {name} was applied with checksum {row['checksum'][:12]}… but the file"
                f" now has {digest[:12]}…: an applied migration must never be edited. Restore the"
                " file as it was and put the change in a new migration."
            )


async def migrate(conn: Connection, up_to: int | None = None) -> list[str]:
    """Apply every migration not yet applied (up to version ``up_to``, when given), each in
    its own transaction; returns their names.

    Refuses (MigrationChanged) when a migration applied earlier has been edited since.
    """
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
    try:
        await conn.execute(_CREATE_VERSION_TABLE)
        await conn.execute(_ADD_CHECKSUM)
        shipped = {version: sql for version, _, sql in migration_files()}
        applied = await conn.fetch(_APPLIED)
        for row in applied:
            if row["checksum"] is None and row["version"] in shipped:
                await conn.execute(_BACKFILL, row["version"], checksum(shipped[row["version"]]))
                log.info(
                    "migration checksum recorded version=%d name=%s", row["version"], row["name"]
                )
        _check_unchanged(await conn.fetch(_APPLIED))
        done = {r["version"] for r in applied}
        for version, name, sql in migration_files():
            if version in done or (up_to is not None and version > up_to):
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(_RECORD, version, name, checksum(sql))
            log.info("migration applied version=%d name=%s", version, name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


async def check_schema(conn: Connection) -> None:
    """Read-only: raise SchemaNotReady if a shipped migration is not applied, MigrationChanged
    if an applied one was edited. For processes that must not run DDL (the API)."""
    try:
        applied = await conn.fetch(_APPLIED)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        applied = []
    pending = [n for v, n, _ in migration_files() if v not in {r["version"] for r in applied}]
    if pending or any(r["checksum"] is None for r in applied):
        raise SchemaNotReady(
            f"the database schema is not current (pending: {', '.join(pending) or 'checksums'});"
            " run `interaction-summary migrate` (the worker and `up` also do)"
        )
    _check_unchanged(applied)


# A connection as routes and sinks receive it: plain, or borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy


async def _keep_session(conn: asyncpg.Connection) -> None:
    """asyncpg's reset hook, doing nothing (``create_pool(reset_sessions=False)``)."""


class BoundedPool(asyncpg.Pool):
    """A pool whose ``acquire`` waits at most ``acquire_timeout`` seconds by default.

    Every ``pool.fetch*``/``execute`` and ``async with pool.acquire()`` goes through it: a
    caller never waits forever for a connection (TimeoutError instead, an OSError).
    """

    acquire_timeout: float | None = None

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_pool(
    dsn: str,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 60,
    command_timeout: float | None = None,
    *,
    run_migrations: bool = True,
    statement_timeout: float | None = None,
    acquire_timeout: float | None = None,
    reset_sessions: bool = True,
) -> asyncpg.Pool:
    """A pool whose connections are ready for this service.

    With ``run_migrations`` pending migrations are applied first; without, the schema is only
    checked (SchemaNotReady, MigrationChanged). ``connect_timeout`` bounds each connection
    attempt, ``command_timeout`` each statement on the client side, ``statement_timeout`` each
    statement in the server (it cancels the query), ``acquire_timeout`` each wait for a
    connection of the pool.
    """
    conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    try:
        if run_migrations:
            await migrate(conn)
        else:
            await check_schema(conn)
    finally:
        await conn.close()
    server_settings = {}
    if statement_timeout is not None:
        server_settings["statement_timeout"] = str(max(1, int(statement_timeout * 1000)))
    pool = BoundedPool(
        dsn,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        timeout=connect_timeout,
        command_timeout=command_timeout,
        server_settings=server_settings,
        reset=None if reset_sessions else _keep_session,
    )
    pool.acquire_timeout = acquire_timeout
    await pool
    return pool
