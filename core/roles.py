"""Database roles: what the API's own role may do, granted by ``interaction-summary migrate --api-role``.

The API faces the internet, so it runs best as a role that can read the counters and history
and write only API keys and the catalog: no DDL, no TRUNCATE, no writes to counters or
history. docs/operations.md, "Security", shows these statements (a test checks they agree).
"""

from __future__ import annotations

import re

import asyncpg

# Tables the API reads and never writes.
API_READS = (
    "schema_migrations", "interaction_bucket", "distinct_seen", "interaction_history",
    "interaction_bucket_outcome", "redis_mirror",
)  # fmt: skip
# Tables the API writes: keys (POST/DELETE /api/v1/keys), the catalog (PUT /api/v1/catalog)
# and the outcome types (/api/v1/outcome-types).
API_WRITES = ("api_key", "catalog_action", "catalog_treatment", "catalog_channel", "outcome_type")
# Version sequences: read to notice changes, bumped on writes (nextval needs USAGE).
API_SEQUENCES = ("catalog_version", "api_key_version", "outcome_type_version")

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def api_grants(role: str) -> list[str]:
    """The GRANT statements that give ``role`` exactly what the API needs."""
    if not _ROLE_NAME.match(role):
        raise ValueError(f"role name {role!r}: use lower-case letters, digits and _ (max 63)")
    return [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT ON {', '.join(API_READS)} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE ON {', '.join(API_WRITES)} TO {role}",
        f"GRANT SELECT, USAGE ON SEQUENCE {', '.join(API_SEQUENCES)} TO {role}",
    ]


async def grant_api_role(conn: asyncpg.Connection, role: str) -> list[str]:
    """Apply :func:`api_grants` to an existing role (create it, with its password, first)."""
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        raise ValueError(
            f"role {role!r} does not exist: CREATE ROLE {role} LOGIN PASSWORD '...' first"
        )
    statements = api_grants(role)
    async with conn.transaction():
        for statement in statements:
            await conn.execute(statement)
    return statements
