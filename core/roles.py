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
    "interaction_bucket_outcome", "redis_mirror", "retention_horizon",
)  # fmt: skip
# Tables the API writes: keys (POST/DELETE /api/v1/keys), the catalog (PUT /api/v1/catalog)
# and the outcome types (/api/v1/outcome-types).
API_WRITES = ("api_key", "catalog_action", "catalog_treatment", "catalog_channel", "outcome_type")
# Erasure of a customer (DELETE /api/v1/customers/{id}, streams/erasure.py) deletes history,
# keeps the erased ids, subtracts from the counters and hands Redis the deltas through the
# outbox. The API's role does not get these by default (it never writes counters or history):
# an operator who wants erasure served by the API grants them (docs/operations.md); without
# them the endpoint answers 403 ERASURE_NOT_PERMITTED. A narrower way would be a SECURITY
# DEFINER function doing the erasure, granted alone.
ERASURE_GRANTS = (
    "GRANT DELETE ON interaction_history",
    "GRANT INSERT ON erased_event",
    "GRANT INSERT, UPDATE, DELETE ON interaction_bucket, interaction_bucket_outcome, distinct_seen",
    "GRANT SELECT, INSERT, DELETE ON redis_outbox",
    "GRANT USAGE ON SEQUENCE redis_batch_id",
    # applying the deltas to Redis at once confirms the batch in the current epoch
    "GRANT UPDATE ON redis_mirror",
)
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


def erasure_grants(role: str) -> list[str]:
    """The GRANT statements that let ``role`` (already given :func:`api_grants`) erase customers."""
    if not _ROLE_NAME.match(role):
        raise ValueError(f"role name {role!r}: use lower-case letters, digits and _ (max 63)")
    return [f"{grant} TO {role}" for grant in ERASURE_GRANTS]


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
