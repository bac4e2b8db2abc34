"""Where an answer comes from: Redis first, Postgres buckets next, raw history last."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from redis.exceptions import RedisError

from api import queries
from api.catalog import Catalog
from api.deps import STORE_ERRORS, Stores
from api.errors import ApiError
from api.rows import rows
from api.summary import GroupBy, Page, Source, Window
from core.ranges import TimeRange, summary_range
from core.retention import MIN_RETENTION_DAYS
from core.schema import ROW_COUNTERS

log = logging.getLogger(__name__)

# Postgres errors that leave the last known Redis proof in use (core/mirror.MirrorCache).
_PROOF_ERRORS = (*STORE_ERRORS, TimeoutError)
_SERIES_COUNTERS = ROW_COUNTERS


def _unavailable(exc: BaseException, what: str) -> ApiError:
    """The 503 for a failed Postgres read: a timeout says which bound was hit."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return ApiError(
            503,
            "QUERY_TIMEOUT",
            f"{what} took longer than the statement timeout and was cancelled;"
            " ask for a shorter range or retry later",
        )
    if isinstance(exc, TimeoutError):
        return ApiError(
            503, "SERVER_BUSY", f"no database connection was free for {what}; retry shortly"
        )
    return ApiError(503, "DATABASE_UNAVAILABLE", f"{what} cannot be read right now; retry shortly")


@asynccontextmanager
async def _heavy(stores: Stores) -> AsyncIterator[None]:
    """A slot for a read without an index bound (half the pool), waited for at most as long
    as for a connection."""
    async with asyncio.timeout(stores.settings.api_pool_acquire_timeout_seconds):
        await stores.heavy_reads.acquire()
    try:
        yield
    finally:
        stores.heavy_reads.release()


async def _page(
    stores: Stores, tenant: str, group_by: GroupBy, rng: TimeRange, limit: int, offset: int
) -> tuple[Page, Source]:
    proof = None if rng.rolling else await stores.mirror.get(stores.pool, _PROOF_ERRORS)
    if proof is not None:  # None: Postgres never said which Redis state is current
        try:
            page = await stores.reader.period_page(
                proof, tenant, group_by, rng.period, rng.first_day, limit, offset
            )
            if page is not None:
                return page, Source.REDIS
        except RedisError as exc:  # Redis down: Postgres still answers exactly
            log.warning("redis read failed, using postgres error=%r", exc)
    pool = stores.require_pool()
    try:
        if rng.rolling:
            async with _heavy(stores):
                page = await queries.rolling_page(
                    pool, tenant, group_by, rng.first_day, rng.last_day, limit, offset
                )
        else:
            page = await queries.period_page(
                pool, tenant, group_by, rng.period, rng.first_day, limit, offset
            )
        if page is not None:
            return page, Source.POSTGRES
        async with _heavy(stores):
            history = await queries.history_page(
                pool, tenant, group_by, rng.start, rng.end, limit, offset
            )
        return history, Source.HISTORY
    except STORE_ERRORS as exc:
        log.warning("postgres read failed error=%r", exc)
        raise _unavailable(exc, "the counters") from None


async def check_retention(stores: Stores, rng: TimeRange) -> None:
    """A rolling window (or series) starting before the first day retention keeps answers
    422 OUTSIDE_RETENTION, never sums of the days that are left (docs/contract.md section 6).
    Windows no longer than the least retention cost no query."""
    if not rng.rolling or (rng.last_day - rng.first_day).days < MIN_RETENTION_DAYS:
        return
    try:
        kept = await queries.rolling_kept_from(stores.require_pool())
    except STORE_ERRORS as exc:
        raise _unavailable(exc, "the retention horizon") from None
    if kept is not None and rng.first_day < kept:
        longest = (rng.last_day - kept).days + 1
        raise ApiError(
            422,
            "OUTSIDE_RETENTION",
            f"the window starts on {rng.first_day.isoformat()}, but retention keeps the daily"
            f" counters from {kept.isoformat()} on: ask for at most {longest} days",
        )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _period_info(rng: TimeRange) -> dict[str, Any]:
    """Rolling windows report type ``daily``: they are sums of daily buckets."""
    return {
        "type": rng.period.value,
        "start": _iso(rng.start),
        "end": _iso(rng.end) if rng.end else None,
    }


async def summary(
    stores: Stores,
    tenant: str,
    group_by: GroupBy,
    days: int,
    window: Window,
    limit: int,
    offset: int,
    now: datetime,
) -> bytes:
    """The response body, as JSON. Dashboards poll the same pages: while Redis returns the same
    page (the same object, see RedisReader) and the catalog is unchanged, the body encoded last
    time is the answer, so only the Redis read is paid again (encoding a 35 KB page was 5 % of
    a request: py-spy)."""
    rng = summary_range(days, window is Window.ROLLING, now)
    await check_retention(stores, rng)
    page, source = await _page(stores, tenant, group_by, rng, limit, offset)
    catalog = await stores.catalog.get(stores.pool, tenant) if stores.pool else Catalog()
    # The classification is applied here, at answer time: a change shows in the next answer.
    classes = await stores.classes.get(stores.pool, tenant)
    shape = (tenant, group_by, days, window, limit, offset, rng)
    built = stores.bodies.get(shape)
    if built is not None and built[0] is page and built[1] is catalog and built[2] is classes:
        return built[3]
    body = orjson.dumps({
        "groupBy": group_by.value,
        "days": days,
        "summary": rows(group_by, page, catalog, classes),
        "total": page.total_groups,
        "limit": limit,
        "offset": offset,
        "window": window.value,
        "period": _period_info(rng),
        "source": source.value,
    })  # fmt: skip
    if source is Source.REDIS:
        stores.bodies.put(shape, (page, catalog, classes, body))
    return body


async def timeseries(stores: Stores, tenant: str, days: int, now: datetime) -> dict[str, Any]:
    rng = summary_range(days, True, now)
    await check_retention(stores, rng)
    pool = stores.require_pool()
    try:
        assert rng.end is not None
        async with _heavy(stores):
            by_day, from_history = await queries.daily_totals(
                pool, tenant, rng.first_day, rng.last_day, rng.start, rng.end
            )
    except STORE_ERRORS as exc:
        log.warning("postgres read failed error=%r", exc)
        raise _unavailable(exc, "the daily counters") from None
    series = []
    for i in range(days):
        day = rng.first_day + timedelta(days=i)
        row = by_day.get(day)
        counts = {c: int(row[c]) if row else 0 for c in _SERIES_COUNTERS}
        series.append({"date": day.isoformat(), **counts})
    return {
        "days": days,
        "series": series,
        "source": (Source.HISTORY if from_history else Source.POSTGRES).value,
    }
