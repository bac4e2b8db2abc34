"""The outcome-type registry over HTTP: read (viewer), create, change, delete (editor)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query

from api import outcome_types as registry
from api.admin import Editor
from api.deps import STORE_ERRORS, StoresDep, Viewer, actor
from api.errors import ApiError
from api.models import ERROR_RESPONSES, ErrorResponse
from api.outcome_types import (
    NewOutcomeType,
    OutcomeType,
    OutcomeTypeChange,
    OutcomeTypeList,
    TypeKey,
)
from core.logs import audit

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "the body is not JSON"},
    401: {"model": ErrorResponse, "description": "missing or invalid API key"},
    403: {"model": ErrorResponse, "description": "the key's role is too low"},
    404: {"model": ErrorResponse, "description": "the tenant has no such custom outcome type"},
    409: {
        "model": ErrorResponse,
        "description": "a system type cannot be changed or deleted, or the key exists already",
    },
    422: {"model": ErrorResponse, "description": "the body or a parameter breaks the schema"},
    503: {"model": ErrorResponse, "description": "Postgres is unreachable"},
    **ERROR_RESPONSES,
}

router = APIRouter(prefix="/api/v1", tags=["outcome types"])
KeyPath = Annotated[TypeKey, Path(description="the outcome type's key (the event `type`)")]

T = TypeVar("T")


async def _stored(call: Awaitable[T], what: str) -> T:
    """Run a registry call, turning its refusals into the API's error answers."""
    try:
        return await call
    except registry.SystemTypeError as exc:
        raise ApiError(409, "SYSTEM_OUTCOME_TYPE", str(exc)) from None
    except registry.TooManyTypes as exc:
        raise ApiError(409, "TOO_MANY_OUTCOME_TYPES", str(exc)) from None
    except STORE_ERRORS:
        raise ApiError(503, "DATABASE_UNAVAILABLE", f"{what} right now") from None


def _missing(key: str) -> ApiError:
    return ApiError(404, "OUTCOME_TYPE_NOT_FOUND", f"the tenant has no custom outcome type {key!r}")


@router.get(
    "/outcome-types",
    response_model=OutcomeTypeList,
    responses=_ERRORS,
    summary="The tenant's outcome types, system ones included, by ordinal",
)
async def get_outcome_types(
    key: Viewer,
    stores: StoresDep,
    include_deleted: Annotated[
        bool, Query(alias="includeDeleted", description="also the soft-deleted custom types")
    ] = False,
) -> OutcomeTypeList:
    pool = stores.require_pool()
    types = await _stored(
        registry.list_types(pool, key.tenant_id, include_deleted),
        "the outcome types cannot be read",
    )
    return OutcomeTypeList(data=types)


@router.post(
    "/outcome-types",
    response_model=OutcomeType,
    status_code=201,
    responses=_ERRORS,
    summary="Register a custom outcome type (editor); its past counts are classified too",
)
async def post_outcome_type(body: NewOutcomeType, key: Editor, stores: StoresDep) -> OutcomeType:
    pool = stores.require_pool()
    made = await _stored(
        registry.create_type(pool, key.tenant_id, body), "the outcome type cannot be written"
    )
    if made is None:
        raise ApiError(
            409, "OUTCOME_TYPE_EXISTS", f"outcome type {body.key!r} exists: change it with PUT"
        )
    stores.classes.invalidate(key.tenant_id)
    audit("outcome_type.create", actor(key), tenant=key.tenant_id, key=body.key)
    return made


@router.put(
    "/outcome-types/{type_key}",
    response_model=OutcomeType,
    responses=_ERRORS,
    summary="Change a custom outcome type (editor); answers follow for all history",
)
async def put_outcome_type(
    type_key: KeyPath, body: OutcomeTypeChange, key: Editor, stores: StoresDep
) -> OutcomeType:
    pool = stores.require_pool()
    changed = await _stored(
        registry.change_type(pool, key.tenant_id, type_key, body),
        "the outcome type cannot be written",
    )
    if changed is None:
        raise _missing(type_key)
    stores.classes.invalidate(key.tenant_id)
    audit(
        "outcome_type.change",
        actor(key),
        tenant=key.tenant_id,
        key=type_key,
        classification=changed.classification.value,
        version=changed.version,
    )
    return changed


@router.delete(
    "/outcome-types/{type_key}",
    response_model=OutcomeType,
    responses=_ERRORS,
    summary="Soft-delete a custom outcome type (editor): its counts stay, unclassified",
)
async def delete_outcome_type(type_key: KeyPath, key: Editor, stores: StoresDep) -> OutcomeType:
    pool = stores.require_pool()
    deleted = await _stored(
        registry.delete_type(pool, key.tenant_id, type_key), "the outcome type cannot be written"
    )
    if deleted is None:
        raise _missing(type_key)
    stores.classes.invalidate(key.tenant_id)
    audit("outcome_type.delete", actor(key), tenant=key.tenant_id, key=type_key)
    return deleted
