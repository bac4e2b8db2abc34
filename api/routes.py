"""The public read API: thin routes over api.answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import ORJSONResponse, Response
from pydantic import Field

from api import answers
from api.deps import StoresDep, Viewer
from api.models import ERROR_RESPONSES, ErrorResponse, SummaryResponse, TimeseriesResponse
from api.params import QueryModel
from api.summary import GroupBy, Window

MAX_LIMIT = 500
MAX_DAYS = 36_500

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "missing, malformed, unknown or revoked API key"},
    403: {
        "model": ErrorResponse,
        "description": "the key's role is too low, or X-Tenant-Id differs",
    },
    422: {"model": ErrorResponse, "description": "a parameter is out of range or unknown"},
    500: {"model": ErrorResponse, "description": "unexpected error (logged)"},
    503: {
        "model": ErrorResponse,
        "description": "no store can answer correctly right now, or the read hit its time bound",
    },
    **ERROR_RESPONSES,
}

router = APIRouter(prefix="/api/v1", tags=["interaction summary"])


class SummaryQuery(QueryModel):
    group_by: GroupBy = Field(GroupBy.ACTION, alias="groupBy", description="grouping dimension")
    days: int = Field(
        30, ge=1, le=MAX_DAYS, description="1: daily, 2-7: weekly, 8-31: monthly, 32+: all-time"
    )
    limit: int = Field(100, ge=1, description="page size; above 500 it is capped at 500")
    offset: int = Field(0, ge=0, le=2**31 - 1, description="groups to skip")
    window: Window = Field(
        Window.PERIOD,
        description="period: the current calendar period; rolling: the last `days` UTC days",
    )


@router.get(
    "/interaction-summary",
    response_model=SummaryResponse,
    responses=_ERRORS,
    summary="Interaction counters grouped by action, treatment, channel or customer",
)
async def interaction_summary(
    key: Viewer, stores: StoresDep, q: Annotated[SummaryQuery, Depends(SummaryQuery.from_request)]
) -> Response:
    body = await answers.summary(
        stores,
        key.tenant_id,
        q.group_by,
        q.days,
        q.window,
        min(q.limit, MAX_LIMIT),
        q.offset,
        datetime.now(UTC),
    )
    return Response(body, media_type="application/json")


@router.get(
    "/interaction-timeseries",
    response_model=TimeseriesResponse,
    responses=_ERRORS,
    summary="Daily interaction counters of the last `days` UTC days (for charts)",
)
async def interaction_timeseries(
    key: Viewer,
    stores: StoresDep,
    days: Annotated[
        int, Query(ge=1, le=366, description="number of UTC days, today included")
    ] = 30,
) -> ORJSONResponse:
    body = await answers.timeseries(stores, key.tenant_id, days, datetime.now(UTC))
    return ORJSONResponse(body)
