"""The outcome-type registry of each tenant: its custom types in Postgres, the system types
from core.schema, and the classification the answers apply (cached per API process).

The system types are not stored: they cannot change, so every tenant shares the declaration
in code, and a tenant without any row of its own still sees them (the "seeded" defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from api.catalog import StoredText
from api.tenant_cache import TenantCache
from core.schema import (
    STATUSES,
    SYSTEM_CLASSES,
    SYSTEM_OUTCOMES,
    TYPE_KEY_PATTERN,
    Category,
    Classification,
)

MAX_TYPES = 1_000  # per tenant and per loaded document
TypeKey = Annotated[str, Field(pattern=f"^{TYPE_KEY_PATTERN}$")]
Name = Annotated[StoredText, Field(min_length=1, max_length=200)]
Description = Annotated[StoredText, Field(max_length=2000)]
Status = Annotated[str, Field(pattern=f"^({'|'.join(STATUSES)})$")]
Ordinal = Annotated[int, Field(ge=0, le=2**31 - 1)]
# System types come first in ordinal order: 10, 20, ...; custom ones default after them.
DEFAULT_ORDINAL = 100


class NewOutcomeType(BaseModel):
    """A custom type (POST, and each item of ``outcome-types load``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: TypeKey
    name: Name
    description: Description | None = None
    classification: Classification
    category: Category = Category.RESPONSE
    ordinal: Ordinal = DEFAULT_ORDINAL
    status: Status = "active"


class OutcomeTypeChange(BaseModel):
    """PUT: the fields given replace the stored ones; the others stay."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name | None = None
    description: Description | None = None
    classification: Classification | None = None
    category: Category | None = None
    ordinal: Ordinal | None = None
    status: Status | None = None


class OutcomeTypesDocument(BaseModel):
    """The JSON file ``interaction-summary outcome-types load`` takes."""

    model_config = ConfigDict(extra="forbid")
    outcomeTypes: list[NewOutcomeType] = Field(max_length=MAX_TYPES)


class OutcomeType(BaseModel):
    """One type as the API shows it."""

    key: str
    name: str
    description: str | None
    classification: Classification
    category: Category
    ordinal: int
    status: str
    system: bool = Field(description="system types cannot be changed or deleted")
    version: int = Field(description="1 when created, +1 per change")
    createdAt: datetime | None = Field(description="null for system types")
    updatedAt: datetime | None
    deletedAt: datetime | None = Field(description="set when soft-deleted")


class OutcomeTypeList(BaseModel):
    data: list[OutcomeType]


_COLUMNS = (
    "key, name, description, classification, category, ordinal, status, version,"
    " created_at, updated_at, deleted_at"
)
SELECT_TYPES = f"""
SELECT {_COLUMNS} FROM outcome_type
WHERE tenant_id = $1 AND ($2 OR deleted_at IS NULL)
"""
SELECT_TYPE = f"SELECT {_COLUMNS} FROM outcome_type WHERE tenant_id = $1 AND key = $2"
# A soft-deleted type is created again in place (its counts never went away).
INSERT_TYPE = f"""
INSERT INTO outcome_type AS o
    (tenant_id, key, name, description, classification, category, ordinal, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (tenant_id, key) DO UPDATE SET
    name = excluded.name, description = excluded.description,
    classification = excluded.classification, category = excluded.category,
    ordinal = excluded.ordinal, status = excluded.status, version = o.version + 1,
    updated_at = now(), deleted_at = NULL
    WHERE o.deleted_at IS NOT NULL OR $9
RETURNING {_COLUMNS}
"""
UPDATE_TYPE = f"""
UPDATE outcome_type SET
    name = coalesce($3, name), description = coalesce($4, description),
    classification = coalesce($5, classification), category = coalesce($6, category),
    ordinal = coalesce($7, ordinal), status = coalesce($8, status),
    version = version + 1, updated_at = now()
WHERE tenant_id = $1 AND key = $2 AND deleted_at IS NULL
RETURNING {_COLUMNS}
"""
DELETE_TYPE = f"""
UPDATE outcome_type SET deleted_at = now(), version = version + 1, updated_at = now()
WHERE tenant_id = $1 AND key = $2 AND deleted_at IS NULL
RETURNING {_COLUMNS}
"""
COUNT_TYPES = "SELECT count(*) FROM outcome_type WHERE tenant_id = $1 AND deleted_at IS NULL"
SELECT_CLASSES = """
SELECT key, classification FROM outcome_type WHERE tenant_id = $1 AND deleted_at IS NULL
"""
CURRENT_VERSION = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outcome_type_version"


class SystemTypeError(ValueError):
    """A write to a system type."""


class TooManyTypes(ValueError):
    """A tenant already has MAX_TYPES custom types."""


def system_types() -> list[OutcomeType]:
    return [
        OutcomeType(
            key=o.key,
            name=o.name,
            description=o.description,
            classification=o.classification,
            category=o.category,
            ordinal=10 * (i + 1),
            status="active",
            system=True,
            version=1,
            createdAt=None,
            updatedAt=None,
            deletedAt=None,
        )
        for i, o in enumerate(SYSTEM_OUTCOMES)
    ]


def _from_row(r: asyncpg.Record) -> OutcomeType:
    return OutcomeType(
        key=r["key"],
        name=r["name"],
        description=r["description"],
        classification=Classification(r["classification"]),
        category=Category(r["category"]),
        ordinal=r["ordinal"],
        status=r["status"],
        system=False,
        version=r["version"],
        createdAt=r["created_at"],
        updatedAt=r["updated_at"],
        deletedAt=r["deleted_at"],
    )


def ordered(types: list[OutcomeType]) -> list[OutcomeType]:
    """Registry order: by ordinal, then key."""
    return sorted(types, key=lambda t: (t.ordinal, t.key))


def _refuse_system(key: str) -> None:
    if key in SYSTEM_CLASSES:
        raise SystemTypeError(f"outcome type {key!r} is a system type: it cannot be changed")


async def list_types(
    pool: asyncpg.Pool, tenant: str, include_deleted: bool = False
) -> list[OutcomeType]:
    rows = await pool.fetch(SELECT_TYPES, tenant, include_deleted)
    return ordered([*system_types(), *map(_from_row, rows)])


async def create_type(
    pool: asyncpg.Pool, tenant: str, new: NewOutcomeType, replace: bool = False
) -> OutcomeType | None:
    """The created type; None when the key exists (and ``replace`` is not set)."""
    _refuse_system(new.key)
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(COUNT_TYPES, tenant) >= MAX_TYPES:
            raise TooManyTypes(f"a tenant has at most {MAX_TYPES} custom outcome types")
        row = await conn.fetchrow(INSERT_TYPE, tenant, new.key, *_values(new), replace)
    return None if row is None else _from_row(row)


def _values(t: NewOutcomeType | OutcomeTypeChange) -> list[Any]:
    """$3..$8 of INSERT_TYPE and UPDATE_TYPE (None: keep the stored value)."""
    return [
        t.name,
        t.description,
        t.classification.value if t.classification else None,
        t.category.value if t.category else None,
        t.ordinal,
        t.status,
    ]


async def change_type(
    pool: asyncpg.Pool, tenant: str, key: str, change: OutcomeTypeChange
) -> OutcomeType | None:
    """The changed type; None when the tenant has no such (undeleted) custom type."""
    _refuse_system(key)
    row = await pool.fetchrow(UPDATE_TYPE, tenant, key, *_values(change))
    return None if row is None else _from_row(row)


async def delete_type(pool: asyncpg.Pool, tenant: str, key: str) -> OutcomeType | None:
    """Soft delete: the counts stay and show as unclassified (neutral). Deleting a deleted
    type again changes nothing and answers it as it is; None when the tenant never had it."""
    _refuse_system(key)
    row = await pool.fetchrow(DELETE_TYPE, tenant, key)
    if row is None:
        row = await pool.fetchrow(SELECT_TYPE, tenant, key)
    return None if row is None else _from_row(row)


async def load_types(pool: asyncpg.Pool, doc: OutcomeTypesDocument, tenant: str) -> int:
    """Create or replace every type of ``doc`` in one transaction; returns how many."""
    for t in doc.outcomeTypes:
        _refuse_system(t.key)
    async with pool.acquire() as conn, conn.transaction():
        for t in doc.outcomeTypes:
            await conn.execute(INSERT_TYPE, tenant, t.key, *_values(t), True)
        if await conn.fetchval(COUNT_TYPES, tenant) > MAX_TYPES:
            raise TooManyTypes(f"a tenant has at most {MAX_TYPES} custom outcome types")
    return len(doc.outcomeTypes)


async def fetch_classes(pool: asyncpg.Pool, tenant: str) -> Mapping[str, Classification]:
    """The classification answers apply: the system types', then the tenant's custom ones
    (deleted ones left out: unclassified, so neutral)."""
    rows = await pool.fetch(SELECT_CLASSES, tenant)
    return {**{r["key"]: Classification(r["classification"]) for r in rows}, **SYSTEM_CLASSES}


class ClassesCache(TenantCache[Mapping[str, Classification]]):
    """Per-tenant classifications, re-read when the registry's version moved (checked at
    most every ``refresh`` seconds) and at once after a change made through this process
    (``invalidate``); api.tenant_cache."""

    def __init__(self, refresh: float) -> None:
        super().__init__(refresh, CURRENT_VERSION, fetch_classes, SYSTEM_CLASSES)
