"""HTTP ingestion: ``POST /interactions`` (our event contract) and ``/respond`` (KaireonAI's).

An answer of 202 (200 for respond) comes only after the broker acknowledged every accepted
event; rejected items are listed by index and never published; a broker that cannot be
reached is a 503 with nothing reported accepted. Counting stays the worker's: the same event id
sent twice is accepted both times and counted once.

Bodies are read here, not by FastAPI, so that the size limit holds before anything is parsed
(and before the key is looked up); their schema is documented from the models below.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, Field

from api import intake, metrics
from api.auth import ApiKey
from api.catalog import Catalog
from api.deps import StoresDep, current_key
from api.errors import ApiError
from api.models import ERROR_RESPONSES, ErrorDetail, ErrorResponse
from api.publisher import BrokerUnavailable, EventPublisher
from core.schema import TYPE_KEY_PATTERN

router = APIRouter(prefix="/api/v1", tags=["ingestion"])


# --- dependencies -------------------------------------------------------------------------


async def limited_body(request: Request) -> bytes:
    """The raw body, refused with 413 as soon as it exceeds the configured limit."""
    limit: int = request.app.state.stores.settings.ingest_max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "BODY_TOO_LARGE", f"the request body exceeds {limit:,} bytes")


async def ingesting_key(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    if not key.role.may_ingest:
        raise ApiError(
            403,
            "FORBIDDEN",
            f"ingestion needs role producer, editor or admin; the key has role {key.role.label}",
        )
    return key


async def get_publisher(request: Request) -> EventPublisher:
    publisher: EventPublisher = request.app.state.publisher
    return publisher


# Declared first in each route: FastAPI resolves them in order, so the size limit comes
# before the key lookup.
Body = Annotated[bytes, Depends(limited_body)]
Ingester = Annotated[ApiKey, Depends(ingesting_key)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]


# --- documented shapes --------------------------------------------------------------------


class Event(BaseModel):
    """One interaction in the event contract (docs/contract.md section 1); validated as the worker does."""

    id: str = Field(min_length=1, max_length=128, description="event id; a repeat counts once")
    timestamp: str | int = Field(
        description="ISO-8601 with offset, or epoch milliseconds; at most 5 minutes ahead"
    )
    customerId: str = Field(min_length=1, max_length=128)
    actionId: str = Field(min_length=1, max_length=128)
    treatmentId: str | None = Field(None, min_length=1, max_length=128)
    channelId: str | None = Field(None, min_length=1, max_length=128)
    type: str = Field(pattern=f"^{TYPE_KEY_PATTERN}$")
    direction: Literal["inbound", "outbound"] | None = None
    tenantId: str | None = Field(
        None, min_length=1, max_length=64, description="if sent, must be the key's tenant"
    )


class Outcome(BaseModel):
    """One outcome in KaireonAI's respond shape, mapped onto the event contract."""

    customerId: str = Field(min_length=1, max_length=128)
    outcome: str = Field(
        pattern=f"^{TYPE_KEY_PATTERN}$",
        description="the event type: any contract type (one the tenant has not registered in"
        " /api/v1/outcome-types counts as neutral)",
    )
    idempotencyKey: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="required (or the Idempotency-Key header): it becomes the event id",
    )
    offerId: str | None = Field(
        None, min_length=1, max_length=128, description="required unless the catalog knows it"
    )
    creativeId: str | None = Field(None, min_length=1, max_length=128)
    channelId: str | None = Field(None, min_length=1, max_length=128)
    direction: Literal["inbound", "outbound"] | None = Field(
        None, description="default: outbound for impressions, inbound for the rest"
    )
    timestamp: str | None = Field(None, description="ISO-8601 with offset; default: now")
    recommendationId: str | None = Field(
        None, description="not resolvable here (no recommendation store): send offerId"
    )
    rank: int | None = None


class ItemRejected(BaseModel):
    index: int = Field(description="position of the item in the request, from 0")
    error: str = Field(description="why it was rejected; it was not published")


class Accepted(BaseModel):
    accepted: int = Field(description="events the broker acknowledged")
    rejected: list[ItemRejected]


class NoneAccepted(ErrorResponse):
    accepted: int | None = None
    rejected: list[ItemRejected] | None = None


class Recorded(BaseModel):
    interactionId: str = Field(description="the event id: the idempotency key")
    customerId: str
    outcome: str
    offerId: str
    creativeId: str | None
    channelId: str | None
    direction: str | None
    timestamp: str
    status: Literal["recorded"] = Field(description="acknowledged by the broker; counted once")


class BulkResult(BaseModel):
    processed: int
    succeeded: int
    failed: int
    errors: list[ItemRejected]


class BulkFailed(ErrorResponse):
    processed: int
    succeeded: int
    failed: int
    errors: list[ItemRejected]


def _body_schema(
    model: type[BaseModel], shape: Literal["one", "one or many", "outcomes"]
) -> dict[str, object]:
    """The request body's schema for OpenAPI, inlined (the body is read by the route)."""
    one = model.model_json_schema()
    many = {"type": "array", "items": one, "minItems": 1, "maxItems": intake.MAX_EVENTS}
    schema: dict[str, object] = {
        "one": one,
        "one or many": {"anyOf": [one, many]},
        "outcomes": {"type": "object", "properties": {"outcomes": many}, "required": ["outcomes"]},
    }[shape]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _errors(invalid: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        **ERROR_RESPONSES,  # 429 past a rate budget, before the route runs
        400: {
            "model": ErrorResponse,
            "description": "the body is not JSON (or no idempotency key)",
        },
        401: {"model": ErrorResponse, "description": "missing, malformed, unknown or revoked key"},
        403: {
            "model": ErrorResponse,
            "description": "the key may not ingest, or a tenantId is not the key's tenant",
        },
        413: {"model": ErrorResponse, "description": "the body exceeds the size limit"},
        # A body of the wrong shape is a plain error; one whose every item failed lists them.
        422: {
            "model": invalid if invalid is ErrorResponse else invalid | ErrorResponse,
            "description": "nothing valid to accept (reasons by index), or a body of the wrong"
            " shape (the error alone)",
        },
        503: {
            "model": ErrorResponse,
            "description": "the broker did not acknowledge: nothing accepted, retry the request",
        },
    }


# --- routes -------------------------------------------------------------------------------


@router.post(
    "/interactions",
    status_code=202,
    response_model=Accepted,
    responses=_errors(NoneAccepted),
    openapi_extra=_body_schema(Event, "one or many"),
    summary="Publish one event or up to 1,000 (producer, editor or admin)",
)
async def post_interactions(
    body: Body, key: Ingester, stores: StoresDep, publisher: PublisherDep
) -> ORJSONResponse:
    items = intake.event_items(intake.decode_body(body))
    now = datetime.now(UTC)
    sorted_ = intake.sort_events(items, key.tenant_id, now, _tolerance(stores))
    rejected = [{"index": r.index, "error": r.error} for r in sorted_.rejected]
    metrics.INGEST_EVENTS.labels("rejected").inc(len(rejected))
    if not sorted_.accepted:
        return _error_with(
            422, "NO_VALID_EVENT", "no event is valid", accepted=0, rejected=rejected
        )
    await _publish(publisher, sorted_)
    return ORJSONResponse({"accepted": len(sorted_.accepted), "rejected": rejected}, 202)


@router.post(
    "/respond",
    response_model=Recorded,
    responses=_errors(ErrorResponse),
    openapi_extra=_body_schema(Outcome, "one"),
    summary="Record one outcome, KaireonAI's shape (producer, editor or admin)",
)
async def post_respond(
    body: Body,
    key: Ingester,
    stores: StoresDep,
    publisher: PublisherDep,
    idempotency_key: Annotated[
        str | None, Header(description="instead of idempotencyKey in the body")
    ] = None,
) -> ORJSONResponse:
    item = intake.decode_body(body)
    now = datetime.now(UTC)
    treatments = (await _catalog(stores, key.tenant_id, [item])).treatments
    sorted_, errors = intake.sort_outcomes(
        [item], key.tenant_id, now, _tolerance(stores), treatments, idempotency_key
    )
    if errors:
        metrics.INGEST_EVENTS.labels("rejected").inc()
        raise ApiError(errors[0].status, errors[0].code, errors[0].message)
    await _publish(publisher, sorted_)
    event = sorted_.accepted[0].event
    return ORJSONResponse(
        {
            "interactionId": event.id,
            "customerId": event.customer_id,
            "outcome": event.type,
            "offerId": event.action_id,
            "creativeId": event.treatment_id,
            "channelId": event.channel_id,
            "direction": event.direction,
            "timestamp": event.timestamp.isoformat().replace("+00:00", "Z"),
            "status": "recorded",
        }
    )


@router.post(
    "/respond/bulk",
    response_model=BulkResult,
    responses=_errors(BulkFailed),
    openapi_extra=_body_schema(Outcome, "outcomes"),
    summary="Record 1 to 1,000 outcomes, KaireonAI's shape (producer, editor or admin)",
)
async def post_respond_bulk(
    body: Body, key: Ingester, stores: StoresDep, publisher: PublisherDep
) -> ORJSONResponse:
    doc = intake.decode_body(body)
    if not isinstance(doc, dict) or "outcomes" not in doc:
        raise ApiError(422, "INVALID_BODY", "the body must be an object with an 'outcomes' array")
    items = intake.batch_items(doc["outcomes"], "outcomes")
    now = datetime.now(UTC)
    treatments = (await _catalog(stores, key.tenant_id, items)).treatments
    sorted_, _ = intake.sort_outcomes(items, key.tenant_id, now, _tolerance(stores), treatments)
    errors = [{"index": r.index, "error": r.error} for r in sorted_.rejected]
    metrics.INGEST_EVENTS.labels("rejected").inc(len(errors))
    manifest = {
        "processed": len(items),
        "succeeded": len(sorted_.accepted),
        "failed": len(errors),
        "errors": errors,
    }
    if not sorted_.accepted:
        return _error_with(422, "NO_VALID_OUTCOME", "every outcome failed", **manifest)
    await _publish(publisher, sorted_)
    return ORJSONResponse(manifest)


# --- helpers ------------------------------------------------------------------------------


async def _publish(publisher: EventPublisher, sorted_: intake.Intake) -> None:
    try:
        await publisher.publish(sorted_.messages())
    except BrokerUnavailable as exc:
        metrics.INGEST_EVENTS.labels("unavailable").inc(len(sorted_.accepted))
        raise ApiError(503, "BROKER_UNAVAILABLE", str(exc)) from None
    metrics.INGEST_EVENTS.labels("accepted").inc(len(sorted_.accepted))


async def _catalog(stores: StoresDep, tenant_id: str, items: list[Any]) -> Catalog:
    """The tenant's catalog, read only when some item needs a creative's offer or channel."""
    needs = any(
        isinstance(i, dict) and (i.get("offerId") is None or i.get("channelId") is None)
        for i in items
    )
    if not needs or stores.pool is None:
        return Catalog()
    return await stores.catalog.get(stores.pool, tenant_id)


def _tolerance(stores: StoresDep) -> timedelta:
    return timedelta(seconds=stores.settings.future_tolerance_seconds)


def _error_with(status: int, code: str, message: str, **extra: Any) -> ORJSONResponse:
    detail = ErrorDetail(code=code, message=message, status=status).model_dump()
    return ORJSONResponse({"error": detail, **extra}, status_code=status)
