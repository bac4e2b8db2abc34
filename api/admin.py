"""Write endpoints for operators: catalog upload (editor) and API keys (admin)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, Field

from api.auth import ApiKey, Role, create_key, revoke_key
from api.auth import key_prefix as prefix_of
from api.catalog import CatalogDocument, StoredText, load_catalog
from api.deps import STORE_ERRORS, StoresDep, actor, require_role
from api.errors import ApiError
from api.models import ERROR_RESPONSES, ErrorResponse
from core.logs import audit

Editor = Annotated[ApiKey, Depends(require_role(Role.EDITOR))]
Admin = Annotated[ApiKey, Depends(require_role(Role.ADMIN))]

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "the body is not JSON"},
    401: {"model": ErrorResponse, "description": "missing or invalid API key"},
    403: {"model": ErrorResponse, "description": "the key's role is too low"},
    422: {"model": ErrorResponse, "description": "the body breaks the schema or a cap"},
    503: {"model": ErrorResponse, "description": "Postgres is unreachable"},
    **ERROR_RESPONSES,
}

router = APIRouter(prefix="/api/v1", tags=["administration"])


class CatalogLoaded(BaseModel):
    actions: int
    treatments: int
    channels: int


class NewKey(BaseModel):
    role: Literal["producer", "viewer", "editor", "admin"]
    label: StoredText | None = Field(None, max_length=200)


class CreatedKey(BaseModel):
    key: str = Field(description="shown once; only its hash is stored")
    role: str
    tenantId: str


class RevokedKeys(BaseModel):
    revoked: int


@router.put(
    "/catalog",
    response_model=CatalogLoaded,
    responses=_ERRORS,
    summary="Load catalog items (editor)",
)
async def put_catalog(doc: CatalogDocument, key: Editor, stores: StoresDep) -> CatalogLoaded:
    """Upsert the actions, treatments and channels of the key's tenant."""
    try:
        await load_catalog(stores.require_pool(), doc, key.tenant_id)
    except STORE_ERRORS:
        raise ApiError(
            503, "DATABASE_UNAVAILABLE", "the catalog cannot be written right now"
        ) from None
    audit(
        "catalog.load",
        actor(key),
        tenant=key.tenant_id,
        actions=len(doc.actions),
        treatments=len(doc.treatments),
        channels=len(doc.channels),
    )
    return CatalogLoaded(
        actions=len(doc.actions), treatments=len(doc.treatments), channels=len(doc.channels)
    )


@router.post(
    "/keys",
    response_model=CreatedKey,
    status_code=201,
    responses=_ERRORS,
    summary="Create an API key (admin)",
)
async def post_key(body: NewKey, key: Admin, stores: StoresDep) -> ORJSONResponse:
    try:
        created = await create_key(
            stores.require_pool(), Role.parse(body.role), key.tenant_id, body.label
        )
    except STORE_ERRORS:
        raise ApiError(503, "DATABASE_UNAVAILABLE", "the key cannot be created right now") from None
    stores.keys.invalidate()  # usable at once here; other API processes see it within a refresh
    audit(
        "key.create",
        actor(key),
        tenant=key.tenant_id,
        key_prefix=prefix_of(created),
        role=body.role,
        label=body.label,
    )
    return ORJSONResponse(
        {"key": created, "role": body.role, "tenantId": key.tenant_id}, status_code=201
    )


@router.delete(
    "/keys/{key_prefix}",
    response_model=RevokedKeys,
    responses=_ERRORS,
    summary="Revoke an API key (admin)",
)
async def delete_key(
    key_prefix: Annotated[StoredText, Path(min_length=8, max_length=100)],
    key: Admin,
    stores: StoresDep,
) -> RevokedKeys:
    try:
        revoked = await revoke_key(stores.require_pool(), key_prefix, key.tenant_id)
    except STORE_ERRORS:
        raise ApiError(503, "DATABASE_UNAVAILABLE", "the key cannot be revoked right now") from None
    stores.keys.invalidate()
    # A full key given in the path is logged as its prefix, as everywhere.
    audit(
        "key.revoke",
        actor(key),
        tenant=key.tenant_id,
        key_prefix=prefix_of(key_prefix),
        revoked=revoked,
    )
    return RevokedKeys(revoked=revoked)
