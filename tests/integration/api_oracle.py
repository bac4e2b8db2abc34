"""The end-of-test oracle for the API: every grouping, period and window answered over HTTP,
compared with the independent recount (``tests/recount.py``); and bounds for answers taken
while events still flow."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.recount import Event, expected_summary, summary_window
from tests.support import wait_until

# --- the API against the recount -----------------------------------------------------------

GROUPINGS = ("action", "treatment", "channel", "customer")
DAYS = (1, 7, 30, 90)
WINDOWS = ("period", "rolling")
QUERIES: tuple[dict[str, Any], ...] = tuple(
    {"groupBy": g, "days": d, "window": w, "limit": 500}
    for g in GROUPINGS
    for d in DAYS
    for w in WINDOWS
)
_META = frozenset(
    {"name", "issue", "group", "status", "priority", "offerName", "channelType", "channelName",
     "templateType", "abTestVariant", "weight"}
)  # fmt: skip
_COUNTS = ("impression", "click", "dismiss", "accept", "convert", "total")


def counters_only(body: dict[str, Any]) -> list[dict[str, Any]]:
    """An answer's rows without catalog metadata (the recount knows no catalog)."""
    return [{k: v for k, v in row.items() if k not in _META} for row in body["summary"]]


def _row_id(row: dict[str, Any]) -> str:
    return str(row.get("id", row.get("customerId")))


class Recount:
    """Expected API answers for a set of distinct events, by tenant (computed on demand)."""

    def __init__(
        self, events: Sequence[Event], classes: dict[str, dict[str, str]] | None = None
    ) -> None:
        self.classes = classes or {}  # tenant -> custom type -> classification
        self.by_tenant: dict[str, list[Event]] = defaultdict(list)
        for e in events:
            self.by_tenant[e.tenant].append(e)

    def answer(self, tenant: str, query: dict[str, Any], now: datetime) -> dict[str, Any]:
        start, end = summary_window(query["days"], query["window"] == "rolling", now)
        events = [
            e
            for e in self.by_tenant.get(tenant, [])
            if e.ts >= start and (end is None or e.ts < end)
        ]
        return expected_summary(
            events,
            tenant,
            query["groupBy"],
            start,
            end,
            query["limit"],
            query.get("offset", 0),
            self.classes.get(tenant),
        )


class ApiClient:
    """GETs the summary with one key per tenant; every response must be JSON."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys  # tenant -> viewer key
        self.requests = 0

    async def get(
        self, tenant: str, query: dict[str, Any], path: str = "/api/v1/interaction-summary"
    ) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=15) as client:
            response = await client.get(
                path, params=query, headers={"Authorization": f"Bearer {self.keys[tenant]}"}
            )
        self.requests += 1
        assert response.headers.get("content-type", "").startswith("application/json"), (
            f"{path} {query}: not JSON: {response.status_code} {response.text[:300]}"
        )
        return response


def mismatch(body: dict[str, Any], want: dict[str, Any], where: str) -> str | None:
    if body["total"] != want["total"]:
        return f"{where}: total {body['total']} != {want['total']}"
    got = counters_only(body)
    if got != want["summary"]:
        for a, b in zip(got, want["summary"], strict=False):
            if a != b:
                return f"{where}: first differing row {a} != expected {b}"
        return f"{where}: {len(got)} rows != {len(want['summary'])} expected"
    return None


async def api_mismatches(
    api: ApiClient, recount: Recount, sources: dict[str, set[str]] | None = None
) -> list[str]:
    """Every query of ``QUERIES`` for every tenant, compared with the recount; [] when exact.

    ``sources`` collects which store answered each window type.
    """
    problems: list[str] = []
    for tenant in api.keys:
        for query in QUERIES:
            response = await api.get(tenant, query)
            where = f"tenant={tenant} {query}"
            if response.status_code != 200:
                problems.append(f"{where}: HTTP {response.status_code} {response.text[:200]}")
                continue
            body = response.json()
            want = recount.answer(tenant, query, datetime.now(UTC))
            if sources is not None and want["total"]:  # an empty period has no bucket to read
                sources.setdefault(query["window"], set()).add(body["source"])
            problem = mismatch(body, want, where)
            if problem:
                problems.append(problem)
    return problems


async def assert_api_matches_recount(
    api: ApiClient, recount: Recount, timeout: float = 30, period_source: str | None = None
) -> dict[str, set[str]]:
    """Every answer equals the recount (waits ``timeout`` for Redis to catch up); returns the
    sources that answered, by window. With ``period_source``, also waits until every current
    period is answered by that store."""
    problems: list[str] = []

    async def agrees() -> tuple[dict[str, set[str]]] | None:
        sources: dict[str, set[str]] = {}
        problems[:] = await api_mismatches(api, recount, sources)
        if period_source is not None and sources.get("period") != {period_source}:
            problems.append(f"current periods answered by {sources.get('period')}")
        return None if problems else (sources,)

    (sources,) = await wait_until(
        agrees,
        timeout,
        0.5,
        lambda: (
            f"{len(problems)} API answers differ from the recount:\n" + "\n".join(problems[:10])
        ),
    )
    return sources


def out_of_bounds(
    body: dict[str, Any], low: dict[str, Any], high: dict[str, Any], where: str
) -> list[str]:
    """Problems of an answer taken while events flow: every group present at the start must be
    there, and every counter lies between what was counted before and after the flow."""
    rows = {_row_id(r): r for r in counters_only(body)}
    lows = {_row_id(r): r for r in low["summary"]}
    highs = {_row_id(r): r for r in high["summary"]}
    problems = []
    if not low["total"] <= body["total"] <= high["total"]:
        problems.append(f"{where}: total {body['total']} not in [{low['total']}, {high['total']}]")
    for group in lows.keys() - rows.keys():
        problems.append(f"{where}: group {group!r} counted before the fault is missing")
    for group, row in rows.items():
        if group not in highs:
            problems.append(f"{where}: group {group!r} was never published")
            continue
        for counter in (*_COUNTS, "uniqueActions", "treatmentCount"):
            if counter not in row:
                continue
            floor = lows[group][counter] if group in lows else 0
            if not floor <= row[counter] <= highs[group][counter]:
                problems.append(
                    f"{where}: {group!r} {counter}={row[counter]} not in [{floor}, {highs[group][counter]}]"
                )
    return problems


@dataclass
class Watch:
    """Answers collected while a fault lasts: how many, from which source, and any problem."""

    answers: int = 0
    unavailable: int = 0
    sources: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    problems: list[str] = field(default_factory=list)


async def watch_answers(
    api: ApiClient,
    before: Recount,
    after: Recount,
    until: Callable[[], bool],
    watch: Watch,
    queries: Sequence[dict[str, Any]] = QUERIES,
) -> Watch:
    """Ask every query, round after round, until ``until()``: each 200 must lie within the
    bounds, each non-200 must be a 503 with the JSON error body."""
    while True:
        for tenant in api.keys:
            for query in queries:
                response = await api.get(tenant, query)
                where = f"tenant={tenant} {query}"
                body = response.json()
                if response.status_code == 503:
                    watch.unavailable += 1
                    if body.get("error", {}).get("status") != 503 or not body["error"].get("code"):
                        watch.problems.append(f"{where}: 503 without the error body: {body}")
                    continue
                if response.status_code != 200:
                    watch.problems.append(f"{where}: HTTP {response.status_code} {body}")
                    continue
                watch.answers += 1
                watch.sources[body["source"]] += 1
                now = datetime.now(UTC)
                watch.problems += out_of_bounds(
                    body, before.answer(tenant, query, now), after.answer(tenant, query, now), where
                )
        if until():
            return watch
