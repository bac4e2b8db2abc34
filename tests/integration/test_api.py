"""Issue 4: the summary API over HTTP, fed through the real broker and worker, field by field
against the recount; the same answers from every source; roles and every error case."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from api.auth import Role, create_key, revoke_key
from api.catalog import CatalogDocument, load_catalog
from core.config import Settings
from tests.integration.stores import wait_for_exact_stores
from tests.integration.traffic import make_traffic
from tests.recount import Event, distinct_events, expected_buckets, expected_summary, summary_window
from tests.support import produce

GROUPINGS = ("action", "treatment", "channel", "customer")
DAYS = (1, 7, 30, 90)
WINDOWS = ("period", "rolling")

CATALOG = CatalogDocument.model_validate(
    {
        "actions": [
            {"id": f"act-{i:02d}", "name": f"Offer {i}", "issue": "Growth", "group": "Cards", "status": "active", "priority": 100 - i}
            for i in range(1, 9)
        ],
        "treatments": [
            {"id": f"tr-{i:02d}", "name": f"Creative {i}", "actionId": f"act-{i:02d}", "channelId": "email",
             "templateType": "html", "abTestVariant": "AB"[i % 2], "weight": 50, "status": "active"}
            for i in range(1, 7)
        ],
        "channels": [{"id": "email", "name": "Marketing Email", "channelType": "email"}, {"id": "web", "name": "Website", "channelType": "web"}],
    }
)  # fmt: skip


@dataclass
class Fed:
    settings: Settings
    url: str
    keys: dict[str, str]
    events: list[Event]
    worker: Any


async def _keys(settings: Settings) -> dict[str, str]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        keys = {role.label: await create_key(pool, role) for role in Role}
        keys["acme"] = await create_key(pool, Role.VIEWER, "acme")
        keys["revoked"] = await create_key(pool, Role.ADMIN)
        await revoke_key(pool, keys["revoked"])
        await load_catalog(pool, CATALOG)
    finally:
        await pool.close()
    return keys


@pytest.fixture
async def fed(settings: Settings, start_worker, start_api) -> Fed:
    """A stack that has counted 3,000 events (with duplicates and invalid messages)."""
    traffic = make_traffic(3000, seed=5)
    worker = start_worker(settings)
    api = await start_api(settings)
    keys = await _keys(settings)
    await produce(settings, traffic.messages)
    events = distinct_events(traffic.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    return Fed(settings, api.url, keys, events, worker)


async def get(url: str, key: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.get("/api/v1/interaction-summary", params=params, headers=headers)


def counters_only(body: dict[str, Any], group_by: str) -> list[dict[str, Any]]:
    """The rows without catalog metadata (checked on its own)."""
    meta = {"name", "issue", "group", "status", "priority", "offerName", "channelType", "channelName",
            "templateType", "abTestVariant", "weight"}  # fmt: skip
    if group_by == "channel":
        meta.discard("treatmentCount")
    return [{k: v for k, v in row.items() if k not in meta} for row in body["summary"]]


async def test_every_grouping_period_and_window_matches_the_recount(fed: Fed) -> None:
    now = datetime.now(UTC)
    for tenant, key in (("default", fed.keys["viewer"]), ("acme", fed.keys["acme"])):
        for group_by, days, window in itertools.product(GROUPINGS, DAYS, WINDOWS):
            response = await get(
                fed.url, key, groupBy=group_by, days=days, window=window, limit=500
            )
            assert response.status_code == 200, response.text
            body = response.json()
            start, end = summary_window(days, window == "rolling", now)
            want = expected_summary(fed.events, tenant, group_by, start, end, 500, 0)
            where = f"tenant={tenant} groupBy={group_by} days={days} window={window}"
            assert body["total"] == want["total"], where
            assert counters_only(body, group_by) == want["summary"], where
            assert (body["groupBy"], body["days"], body["window"], body["limit"], body["offset"]) == (
                group_by, days, window, 500, 0,
            ), where  # fmt: skip
            assert body["source"] == ("postgres" if window == "rolling" else "redis"), where


async def test_pages_are_stable_slices_of_the_full_ranking(fed: Fed) -> None:
    key = fed.keys["viewer"]
    full = (await get(fed.url, key, groupBy="customer", days=90, limit=500)).json()
    assert full["total"] > 12
    for offset in (0, 5, 10):
        page = (await get(fed.url, key, groupBy="customer", days=90, limit=5, offset=offset)).json()
        assert page["summary"] == full["summary"][offset : offset + 5]
        assert page["total"] == full["total"]


async def test_catalog_metadata_is_joined_and_unknown_ids_are_null(fed: Fed) -> None:
    key = fed.keys["viewer"]
    actions = {
        r["id"]: r
        for r in (await get(fed.url, key, groupBy="action", days=90, limit=500)).json()["summary"]
    }
    assert actions["act-01"] | {} == actions["act-01"]
    assert (
        actions["act-01"]["name"],
        actions["act-01"]["priority"],
        actions["act-01"]["group"],
    ) == ("Offer 1", 99, "Cards")
    unknown = [row for id_, row in actions.items() if id_ > "act-08"]
    assert unknown, "the traffic has actions the catalog does not know"
    assert all(row["name"] is None and row["priority"] is None for row in unknown)

    treatments = {
        r["id"]: r
        for r in (await get(fed.url, key, groupBy="treatment", days=90, limit=500)).json()[
            "summary"
        ]
    }
    tr = treatments["tr-02"]
    assert (tr["name"], tr["offerName"], tr["channelName"], tr["channelType"], tr["abTestVariant"]) == (
        "Creative 2", "Offer 2", "Marketing Email", "email", "A",
    )  # fmt: skip
    assert treatments["tr-11"]["offerName"] is None

    channels = {
        r["id"]: r
        for r in (await get(fed.url, key, groupBy="channel", days=90, limit=500)).json()["summary"]
    }
    assert (channels["web"]["name"], channels["web"]["channelType"]) == ("Website", "web")
    assert channels["sms"]["name"] is None


async def test_redis_postgres_and_history_give_identical_bodies(fed: Fed) -> None:
    key = fed.keys["viewer"]
    queries = [
        dict(groupBy=g, days=d, window=w, limit=50)
        for g, d, w in itertools.product(GROUPINGS, DAYS, WINDOWS)
    ]

    async def answers() -> list[dict[str, Any]]:
        return [(await get(fed.url, key, **q)).json() for q in queries]

    from_redis = await answers()
    fed.worker.stop()  # a running worker would resync Redis at once
    redis = Redis.from_url(fed.settings.redis_url)
    try:
        await redis.delete(
            *[k async for k in redis.scan_iter(match=f"{fed.settings.redis_prefix}:*")]
        )
    finally:
        await redis.aclose()
    from_postgres = await answers()
    conn = await asyncpg.connect(fed.settings.database_url)
    try:
        await conn.execute("TRUNCATE interaction_bucket, distinct_seen")
    finally:
        await conn.close()
    from_history = await answers()

    for q, a, b, c in zip(queries, from_redis, from_postgres, from_history, strict=True):
        assert b["source"] == "postgres", q
        assert c["source"] == "history", q
        assert a["source"] == ("postgres" if q["window"] == "rolling" else "redis"), q
        assert {**a, "source": None} == {**b, "source": None} == {**c, "source": None}, q


async def test_role_matrix_and_error_bodies(fed: Fed) -> None:
    url, keys = fed.url, fed.keys
    cases = [
        (None, "MISSING_API_KEY", 401),
        ("not-a-key", "INVALID_API_KEY", 401),
        ("isk_" + "x" * 43, "INVALID_API_KEY", 401),
        (keys["revoked"], "INVALID_API_KEY", 401),
    ]
    for key, code, status in cases:
        response = await get(url, key)
        assert response.status_code == status, key
        assert response.json()["error"] == {
            "code": code,
            "message": response.json()["error"]["message"],
            "status": status,
        }
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        other_tenant = await client.get(
            "/api/v1/interaction-summary",
            headers={"Authorization": f"Bearer {keys['viewer']}", "X-Tenant-Id": "acme"},
        )
        assert other_tenant.status_code == 403
        as_x_api_key = await client.get(
            "/api/v1/interaction-summary", headers={"X-API-Key": keys["viewer"]}
        )
        assert as_x_api_key.status_code == 200
        for role, status in (("viewer", 403), ("editor", 403), ("admin", 201)):
            made = await client.post(
                "/api/v1/keys",
                json={"role": "viewer"},
                headers={"Authorization": f"Bearer {keys[role]}"},
            )
            assert made.status_code == status, role
        for role, status in (("viewer", 403), ("editor", 200), ("admin", 200)):
            loaded = await client.put(
                "/api/v1/catalog",
                json={"channels": [{"id": "web", "name": "Website"}]},
                headers={"Authorization": f"Bearer {keys[role]}"},
            )
            assert loaded.status_code == status, role
        # The outcome-type registry: everyone of the tenant reads it, editors write it.
        for role in ("viewer", "editor", "admin"):
            auth = {"Authorization": f"Bearer {keys[role]}"}
            assert (await client.get("/api/v1/outcome-types", headers=auth)).status_code == 200
            writes = (
                ("POST", "/api/v1/outcome-types", {"key": f"t_{role}", "name": "T", "classification": "positive"}, 201),
                ("PUT", f"/api/v1/outcome-types/t_{role}", {"classification": "negative"}, 200),
                ("DELETE", f"/api/v1/outcome-types/t_{role}", None, 200),
            )  # fmt: skip
            for method, path, body, allowed in writes:
                answer = await client.request(method, path, json=body, headers=auth)
                want = 403 if role == "viewer" else allowed
                assert answer.status_code == want, (role, method, answer.text)
                if want == 403:
                    assert answer.json()["error"]["code"] == "FORBIDDEN"
        no_key = await client.get("/api/v1/outcome-types")
        assert no_key.status_code == 401


PARAMETER_CASES: list[tuple[dict[str, Any], int, Any]] = [
    ({"limit": 501}, 200, lambda b: b["limit"] == 500),  # capped, not an error
    ({"limit": 0}, 422, None),
    ({"days": 0}, 422, None),
    ({"days": 36501}, 422, None),
    ({"days": "ten"}, 422, None),
    ({"groupBy": "region"}, 422, None),
    ({"groupBy": "action; DROP TABLE interaction_bucket"}, 422, None),  # never reaches SQL
    ({"window": "sliding"}, 422, None),
    ({"offset": -1}, 422, None),
    ({"offset": 10**30}, 422, None),
    ({"offset": 100000}, 200, lambda b: b["summary"] == [] and b["total"] > 0),  # beyond total
    ({"unknownParam": "x"}, 200, lambda b: b["groupBy"] == "action"),  # ignored
    ({"days": 36500, "window": "rolling"}, 200, lambda b: b["total"] > 0),  # the largest range
]


async def test_parameters_are_validated_capped_or_ignored(fed: Fed) -> None:
    for params, status, check in PARAMETER_CASES:
        response = await get(fed.url, fed.keys["viewer"], **params)
        assert response.status_code == status, (params, response.text)
        body = response.json()
        if status == 422:
            assert body["error"]["code"] == "INVALID_PARAMETER", params
            assert body["error"]["status"] == 422, params
            assert body["error"]["message"], params
        else:
            assert check(body), params
    conn = await asyncpg.connect(fed.settings.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM interaction_bucket") > 0
    finally:
        await conn.close()
