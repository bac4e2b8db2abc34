"""Response models: they produce the documented camelCase JSON and the OpenAPI document."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.summary import GroupBy, Source, Window
from core.periods import Period
from core.schema import ROW_COUNTERS, SYSTEM_OUTCOMES


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


_COUNTER_FIELDS: dict[str, Any] = {
    **{o.key: (int, Field(description=f"{o.description}: count in the period")) for o in SYSTEM_OUTCOMES},
    "total": (int, Field(description="every accepted interaction, other types included")),
    "outcomes": (
        dict[str, int],
        Field(
            description="extension: every outcome type counted in the period (system and custom"
            " ones; types with no event left out) -> its count"
        ),
    ),
}  # fmt: skip
assert [*_COUNTER_FIELDS][:-1] == list(ROW_COUNTERS)

# The counters of every row, generated from core.schema (mypy sees a plain row).
if TYPE_CHECKING:
    _Counters = _Row
else:
    _Counters = create_model("_Counters", __base__=_Row, **_COUNTER_FIELDS)


class ActionRow(_Counters):
    id: str
    name: str | None = Field(description="catalog name; null when the action is not in the catalog")
    issue: str | None
    group: str | None
    status: str | None
    priority: int | None
    ctr: float = Field(description="round(100 * click / impression, 2); 0 without impressions")
    cvr: float = Field(description="round(100 * convert / impression, 2); 0 without impressions")
    positive: int = Field(
        description="the counts of the types the tenant's registry classifies positive"
        " (system: click + accept)"
    )
    negative: int = Field(description="the counts of the types classified negative (dismiss)")
    neutral: int = Field(description="max(impression - positive - negative, 0)")


class TreatmentRow(_Counters):
    id: str
    name: str | None
    offerName: str | None = Field(description="name of the treatment's action in the catalog")
    channelType: str | None
    channelName: str | None
    templateType: str | None
    abTestVariant: str | None
    weight: int | None
    status: str | None
    ctr: float
    cvr: float


class ChannelRow(_Counters):
    id: str
    name: str | None
    channelType: str | None
    treatmentCount: int = Field(description="distinct treatments with interactions on this channel")
    ctr: float


class CustomerRow(_Counters):
    customerId: str
    uniqueActions: int = Field(description="distinct actions this customer interacted with")


class PeriodInfo(BaseModel):
    type: Period
    start: str = Field(description="inclusive start, ISO-8601 UTC")
    end: str | None = Field(description="exclusive end, ISO-8601 UTC; null for all-time")


class SummaryResponse(BaseModel):
    groupBy: GroupBy
    days: int
    summary: list[ActionRow] | list[TreatmentRow] | list[ChannelRow] | list[CustomerRow]
    total: int = Field(description="number of groups before paging")
    limit: int = Field(description="page size as applied (capped at 500)")
    offset: int
    window: Window
    period: PeriodInfo
    source: Source = Field(description="which store answered: redis, postgres or history")


if TYPE_CHECKING:
    DayCounts = BaseModel
else:
    DayCounts = create_model("DayCounts", date=(date, ...), **{c: (int, ...) for c in ROW_COUNTERS})


class TimeseriesResponse(BaseModel):
    days: int
    series: list[DayCounts] = Field(
        description="one entry per UTC day, oldest first, zeros included"
    )
    source: Source


class ErrorDetail(BaseModel):
    code: str = Field(description="UPPER_SNAKE error code")
    message: str = Field(description="what went wrong and why")
    status: int


class ErrorResponse(BaseModel):
    error: ErrorDetail


# Answers any operation can give before its own code runs (api.limits), for every operation's
# documented responses.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    413: {"model": ErrorResponse, "description": "the request body is larger than the limit"},
    429: {
        "model": ErrorResponse,
        "description": "too many requests for this key or client address; see Retry-After",
    },
}


# --- per-customer reads (api/customer_routes.py) ---


class CustomerSummaryRow(_Row):
    customerId: str
    offerId: str = Field(description="the action (offer)")
    treatmentId: str | None = Field(description="the treatment (creative); null when absent")
    creativeId: str | None = Field(description="KaireonAI's name for treatmentId")
    channelId: str | None
    periodType: str = Field(description="daily, weekly, monthly, alltime, or rolling (days=N)")
    periodKey: str = Field(
        description="2026-12-01, 2026-W49 (ISO week), 2026-12, alltime, or P7D (rolling)"
    )
    start: str | None = Field(description="inclusive start, ISO-8601 UTC; null for all-time")
    end: str | None = Field(description="exclusive end, ISO-8601 UTC; null for all-time")
    impressions: int
    positive: int = Field(description="as in the summary endpoint: click + accept")
    negative: int = Field(description="as in the summary endpoint: dismiss")
    neutral: int = Field(description="max(impressions - positive - negative, 0)")
    converts: int
    total: int = Field(description="every interaction of the row, other types included")
    lastContactAt: str = Field(description="time of the row's latest interaction, ISO-8601 UTC")
    lastOutcomeKey: str = Field(description="type of the row's latest interaction")


class CustomerSummariesResponse(BaseModel):
    data: list[CustomerSummaryRow]
    total: int = Field(description="rows before the limit")


class HistoryRow(_Row):
    id: str = Field(description="the event id")
    timestamp: str = Field(description="event time, ISO-8601 UTC")
    customerId: str
    actionId: str
    offerId: str = Field(description="KaireonAI's name for actionId")
    treatmentId: str | None
    creativeId: str | None = Field(description="KaireonAI's name for treatmentId")
    channelId: str | None
    type: str
    direction: str | None


class Pagination(BaseModel):
    limit: int
    hasMore: bool
    nextCursor: str | None = Field(description="pass as `cursor` for the next page")


class HistoryResponse(BaseModel):
    data: list[HistoryRow]
    pagination: Pagination


class ErasedPostgres(BaseModel):
    events: int = Field(description="history rows deleted (their ids are kept as tombstones)")
    bucketsChanged: int = Field(description="stored bucket rows that lost counts")
    bucketsDeleted: int = Field(description="... of which no interaction is left")
    distinctPairsDeleted: int
    distinctPairsChanged: int


class ErasedRedis(BaseModel):
    buckets: int = Field(description="hot buckets the erasure subtracts from")
    applied: bool = Field(
        description="false: Redis was not ready; the worker applies it from the outbox"
    )


class ErasedCustomer(BaseModel):
    customerId: str
    postgres: ErasedPostgres
    redis: ErasedRedis
