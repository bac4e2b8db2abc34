"""Per-customer reads for decisioning and erasure: thin routes over api.customers,
api.customer_queries and streams.erasure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Path
from fastapi.responses import ORJSONResponse, Response
from pydantic import Field

from api import customer_queries
from api.auth import ApiKey, Role
from api.customers import (
    BadCursor,
    decode_cursor,
    encode_cursor,
    rolling_start,
)
from api.deps import STORE_ERRORS, StoresDep, Viewer, actor, require_role
from api.errors import ApiError
from api.models import (
    ERROR_RESPONSES,
    CustomerSummariesResponse,
    ErasedCustomer,
    ErrorResponse,
    HistoryResponse,
)
from api.params import QueryModel
from core.logs import audit
from core.periods import Period
from core.schema import TYPE_KEY_PATTERN
from streams.erasure import erase_customer
from streams.redis_sink import RedisSink

MAX_SUMMARY_ROWS = 200
MAX_HISTORY_ROWS = 200
MAX_DAYS = 36_500
# As the contract caps ids; NUL cannot be stored in Postgres text (a 422 here, not a 503).
_ID = {"min_length": 1, "max_length": 128, "pattern": r"^[^\x00]*$"}

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "customerId is missing, or a bad cursor"},
    401: {"model": ErrorResponse, "description": "missing, malformed, unknown or revoked API key"},
    403: {
        "model": ErrorResponse,
        "description": "the key's role is too low; or (erasure) the API's database role may not",
    },
    422: {"model": ErrorResponse, "description": "a parameter is out of range"},
    503: {"model": ErrorResponse, "description": "Postgres cannot answer right now"},
    **ERROR_RESPONSES,
}

router = APIRouter(prefix="/api/v1", tags=["customers"])

Admin = Annotated[ApiKey, Depends(require_role(Role.ADMIN))]
# A customer or catalog id in a query (the limits of _ID).
Id = Annotated[str | None, Field(**_ID)]  # type: ignore[call-overload]


class CustomerQuery(QueryModel):
    """The parameters both per-customer reads share."""

    customer: Id = Field(
        None, alias="customerId", description="required: 400 MISSING_CUSTOMER_ID without it"
    )
    offer: Id = Field(None, alias="offerId", description="the action")
    action: Id = Field(None, alias="actionId", description="= offerId")
    treatment: Id = Field(None, alias="treatmentId")
    creative: Id = Field(None, alias="creativeId", description="= treatmentId")
    channel: Id = Field(None, alias="channelId")

    def rows(self, tenant: str) -> customer_queries.Rows:
        """Whose rows: the customer (400 without one) and the filters, each by either name."""
        if self.customer is None:
            raise ApiError(400, "MISSING_CUSTOMER_ID", "the query parameter customerId is required")
        return customer_queries.Rows(
            tenant,
            self.customer,
            _one("offerId", self.offer, "actionId", self.action),
            _one("treatmentId", self.treatment, "creativeId", self.creative),
            self.channel,
        )


class SummariesQuery(CustomerQuery):
    period_type: Period | None = Field(
        None, alias="periodType", description="all four when omitted"
    )
    days: int | None = Field(
        None,
        ge=1,
        le=MAX_DAYS,
        description="rolling: one row per combination over the last N UTC days, today"
        " included (periodType rolling); not with periodType",
    )
    limit: int = Field(100, ge=1, description="rows; above 200 capped at 200")


class HistoryQuery(CustomerQuery):
    type: str | None = Field(None, pattern=f"^{TYPE_KEY_PATTERN}$", description="event type")
    cursor: str | None = Field(None, max_length=1000, description="nextCursor of the previous page")
    limit: int = Field(50, ge=1, description="rows; above 200 capped at 200")


def _one(name: str, ours: str | None, alias_name: str, alias: str | None) -> str | None:
    if ours is not None and alias is not None and ours != alias:
        raise ApiError(
            422, "INVALID_PARAMETER", f"{name} and {alias_name} name the same filter; they differ"
        )
    return ours if ours is not None else alias


def _unavailable() -> ApiError:
    return ApiError(503, "DATABASE_UNAVAILABLE", "the history cannot be read right now")


@router.get(
    "/interaction-summaries",
    response_model=CustomerSummariesResponse,
    responses=_ERRORS,
    summary="One customer's counts per offer, treatment and channel, per period",
)
async def interaction_summaries(
    key: Viewer,
    stores: StoresDep,
    q: Annotated[SummariesQuery, Depends(SummariesQuery.from_request)],
) -> Response:
    rows = q.rows(key.tenant_id)
    if q.days is not None and q.period_type is not None:
        raise ApiError(422, "INVALID_PARAMETER", "give periodType or days, not both")
    rolling = (q.days, *rolling_start(q.days, datetime.now(UTC))) if q.days is not None else None
    pool = stores.require_pool()
    classes = await stores.classes.get(pool, key.tenant_id)  # the tenant's registry
    try:
        body = await customer_queries.summary_page(
            pool,
            rows,
            [q.period_type] if q.period_type is not None else list(Period),
            rolling,
            min(q.limit, MAX_SUMMARY_ROWS),
            classes,
        )
    except STORE_ERRORS:
        raise _unavailable() from None
    return Response(body, media_type="application/json")


@router.get(
    "/interaction-history",
    response_model=HistoryResponse,
    responses=_ERRORS,
    summary="One customer's interactions, newest first, in pages (keyset cursor)",
)
async def interaction_history(
    key: Viewer, stores: StoresDep, q: Annotated[HistoryQuery, Depends(HistoryQuery.from_request)]
) -> Response:
    rows = q.rows(key.tenant_id)
    try:
        after = decode_cursor(q.cursor) if q.cursor else None
    except BadCursor as exc:
        raise ApiError(400, "INVALID_CURSOR", str(exc)) from None
    size = min(q.limit, MAX_HISTORY_ROWS)
    try:
        found, last = await customer_queries.history_page(
            stores.require_pool(), rows, q.type, after, size
        )
    except STORE_ERRORS:
        raise _unavailable() from None
    pagination = {
        "limit": size,
        "hasMore": last is not None,
        "nextCursor": encode_cursor(*last) if last else None,
    }
    return Response(
        b'{"data":[' + found.encode() + b'],"pagination":' + orjson.dumps(pagination) + b"}",
        media_type="application/json",
    )


@router.delete(
    "/customers/{customerId}",
    response_model=ErasedCustomer,
    responses=_ERRORS,
    summary="Erase a customer everywhere (admin)",
)
async def delete_customer(
    customer: Annotated[str, Path(alias="customerId", **_ID)], key: Admin, stores: StoresDep
) -> ORJSONResponse:
    """Deletes the customer's history and subtracts it from every bucket of every dimension
    in Postgres and Redis, in one step against concurrent counting. Their event ids are kept
    (ids only) so that a republished old event is not counted again."""
    sink = RedisSink(stores.redis, stores.settings.redis_prefix)
    try:
        erased = await erase_customer(
            stores.require_pool(), sink, key.tenant_id, customer, datetime.now(UTC)
        )
    except asyncpg.InsufficientPrivilegeError:
        raise ApiError(
            403,
            "ERASURE_NOT_PERMITTED",
            "the API's database role may not erase; an operator grants it (README 'Security')",
        ) from None
    except STORE_ERRORS:
        raise ApiError(
            503, "DATABASE_UNAVAILABLE", "the customer cannot be erased right now"
        ) from None
    # No customer id in the log: it is the personal data being erased.
    audit(
        "customer.erase",
        actor(key),
        tenant=key.tenant_id,
        events=erased.events,
        buckets_changed=erased.buckets_changed,
        redis_batch_id=erased.redis_batch_id,
        redis_applied=erased.redis_applied,
    )
    return ORJSONResponse(
        {
            "customerId": customer,
            "postgres": {
                "events": erased.events,
                "bucketsChanged": erased.buckets_changed,
                "bucketsDeleted": erased.buckets_deleted,
                "distinctPairsDeleted": erased.distinct_pairs_deleted,
                "distinctPairsChanged": erased.distinct_pairs_changed,
            },
            "redis": {"buckets": erased.redis_buckets, "applied": erased.redis_applied},
        }
    )
