"""The catalog (actions, treatments, channels): loaded from JSON into Postgres, cached per API process."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.tenant_cache import TenantCache

# What Postgres can store, checked at the edge: a value it refuses would otherwise fail the
# write and be reported as an outage (503). Text cannot hold NUL; integer columns are 32-bit.
StoredText = Annotated[str, Field(pattern=r"^[^\x00]*$")]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]

# Caps on one catalog document (a 422 names the field past its cap). With the API's body limit
# they bound what one PUT /api/v1/catalog may cost to parse and to upsert.
MAX_ITEMS = 10_000  # per list: the demo catalog has 5,000 treatments
MAX_TEXT = 500  # characters of a name, issue, group, status, type or variant
Text = Annotated[StoredText, Field(max_length=MAX_TEXT)]
Ref = Annotated[StoredText, Field(max_length=128)]  # an id of another item, as ids are capped


class _CatalogItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)
    id: StoredText = Field(min_length=1, max_length=128)


class CatalogAction(_CatalogItem):
    name: Text | None = None
    issue: Text | None = None
    group: Text | None = None
    status: Text | None = None
    priority: Int32 | None = None


class CatalogTreatment(_CatalogItem):
    name: Text | None = None
    action_id: Ref | None = Field(None, alias="actionId")
    channel_id: Ref | None = Field(None, alias="channelId")
    template_type: Text | None = Field(None, alias="templateType")
    ab_test_variant: Text | None = Field(None, alias="abTestVariant")
    weight: Int32 | None = None
    status: Text | None = None


class CatalogChannel(_CatalogItem):
    name: Text | None = None
    channel_type: Text | None = Field(None, alias="channelType")


class CatalogDocument(BaseModel):
    """The JSON file ``interaction-summary catalog load`` takes."""

    model_config = ConfigDict(extra="forbid")
    actions: list[CatalogAction] = Field([], max_length=MAX_ITEMS)
    treatments: list[CatalogTreatment] = Field([], max_length=MAX_ITEMS)
    channels: list[CatalogChannel] = Field([], max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _ids_are_unique(self) -> CatalogDocument:
        """One upsert cannot touch a row twice: an id given twice would fail the whole load."""
        for name, items in (
            ("actions", self.actions),
            ("treatments", self.treatments),
            ("channels", self.channels),
        ):
            twice = [i for i, n in Counter(item.id for item in items).items() if n > 1]
            if twice:
                raise ValueError(f"{name}: id {twice[0]!r} appears more than once")
        return self


UPSERT_ACTIONS = """
INSERT INTO catalog_action (tenant_id, id, name, issue, "group", status, priority)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[])
ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, issue = excluded.issue,
    "group" = excluded."group", status = excluded.status, priority = excluded.priority
"""
UPSERT_TREATMENTS = """
INSERT INTO catalog_treatment
    (tenant_id, id, name, action_id, channel_id, template_type, ab_test_variant, weight, status)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::int[], $9::text[])
ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, action_id = excluded.action_id,
    channel_id = excluded.channel_id, template_type = excluded.template_type,
    ab_test_variant = excluded.ab_test_variant, weight = excluded.weight, status = excluded.status
"""
UPSERT_CHANNELS = """
INSERT INTO catalog_channel (tenant_id, id, name, channel_type)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])
ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, channel_type = excluded.channel_type
"""
BUMP_VERSION = "SELECT nextval('catalog_version')"
# last_value is 1 both before and after the first nextval: is_called tells them apart, or
# the first load ever would go unnoticed by an API that had already cached the catalog.
CURRENT_VERSION = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM catalog_version"
SELECT_ACTIONS = """
SELECT id, name, issue, "group", status, priority FROM catalog_action WHERE tenant_id = $1
"""
SELECT_TREATMENTS = """
SELECT id, name, action_id, channel_id, template_type, ab_test_variant, weight, status
FROM catalog_treatment WHERE tenant_id = $1
"""
SELECT_CHANNELS = "SELECT id, name, channel_type FROM catalog_channel WHERE tenant_id = $1"


def _columns(items: list[BaseModel], names: list[str]) -> list[list[object]]:
    return [[getattr(item, name) for item in items] for name in names]


async def load_catalog(
    pool: asyncpg.Pool, doc: CatalogDocument, tenant_id: str = "default"
) -> None:
    """Upsert every item of ``doc`` for ``tenant_id`` in one transaction."""
    action_cols = ["id", "name", "issue", "group", "status", "priority"]
    treatment_cols = [
        "id", "name", "action_id", "channel_id", "template_type", "ab_test_variant", "weight", "status",
    ]  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(UPSERT_ACTIONS, tenant_id, *_columns(list(doc.actions), action_cols))
        await conn.execute(
            UPSERT_TREATMENTS, tenant_id, *_columns(list(doc.treatments), treatment_cols)
        )
        await conn.execute(
            UPSERT_CHANNELS,
            tenant_id,
            *_columns(list(doc.channels), ["id", "name", "channel_type"]),
        )
        await conn.execute(BUMP_VERSION)


@dataclass(frozen=True, slots=True)
class Catalog:
    """One tenant's catalog as plain dicts keyed by id."""

    actions: dict[str, asyncpg.Record] = field(default_factory=dict)
    treatments: dict[str, asyncpg.Record] = field(default_factory=dict)
    channels: dict[str, asyncpg.Record] = field(default_factory=dict)


async def fetch_catalog(pool: asyncpg.Pool, tenant_id: str) -> Catalog:
    async with pool.acquire() as conn:
        actions = await conn.fetch(SELECT_ACTIONS, tenant_id)
        treatments = await conn.fetch(SELECT_TREATMENTS, tenant_id)
        channels = await conn.fetch(SELECT_CHANNELS, tenant_id)
    return Catalog(
        {r["id"]: r for r in actions},
        {r["id"]: r for r in treatments},
        {r["id"]: r for r in channels},
    )


class CatalogCache(TenantCache[Catalog]):
    """Per-tenant catalogs, re-read when ``catalog load`` bumped the version (api.tenant_cache)."""

    def __init__(self, refresh: float) -> None:
        super().__init__(refresh, CURRENT_VERSION, fetch_catalog, Catalog())
