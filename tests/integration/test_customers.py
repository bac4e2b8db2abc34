"""Issue 12: per-customer reads and erasure over HTTP, fed through the real broker and worker,
against the naive recount (tests/recount.py); erasure while events flow, then every store
compared with a recount without the customer."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from api.auth import Role, create_key
from core.config import Settings
from core.db import migrate, migration_files
from core.roles import erasure_grants
from core.schema import SYSTEM_TYPES
from streams.rebuild import rebuild_postgres
from tests.integration.stores import (
    kept_in_redis,
    postgres_buckets,
    postgres_outcomes,
    redis_outcomes,
    wait_for_exact_stores,
)
from tests.integration.traffic import make_traffic
from tests.recount import (
    Event,
    distinct_events,
    expected_buckets,
    expected_customer_summaries,
    expected_outcomes,
)
from tests.support import grant_erasure, produce

SUMMARIES = "/api/v1/interaction-summaries"
HISTORY = "/api/v1/interaction-history"
PERIODS = ("daily", "weekly", "monthly", "alltime")


async def _keys(settings: Settings) -> dict[str, str]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        keys = {role.label: await create_key(pool, role) for role in Role}
        keys["acme"] = await create_key(pool, Role.VIEWER, "acme")
    finally:
        await pool.close()
    return keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _fed(settings: Settings, start_worker, count: int, seed: int) -> list[Event]:
    traffic = make_traffic(count, seed=seed)
    start_worker(settings)
    await produce(settings, traffic.messages)
    events = distinct_events(traffic.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    return events


def _customers(events: list[Event]) -> list[tuple[str, str]]:
    return sorted({(e.tenant, e.customer) for e in events})


async def test_summaries_of_every_customer_and_filter_equal_the_recount(
    settings: Settings, start_worker, start_api
) -> None:
    events = await _fed(settings, start_worker, 2500, seed=12)
    api = await start_api(settings)
    keys = await _keys(settings)
    tenant_keys = {"default": keys["viewer"], "acme": keys["acme"]}
    now = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:

        async def check(tenant: str, customer: str, want: list[dict[str, Any]], **params: Any):
            response = await client.get(
                SUMMARIES,
                params={"customerId": customer, "limit": 200, **params},
                headers=_auth(tenant_keys[tenant]),
            )
            assert response.status_code == 200, response.text
            body = response.json()
            where = f"tenant={tenant} customer={customer} {params}"
            assert body["total"] == len(want), where
            assert body["data"] == want[:200], where

        customers = _customers(events)
        assert len(customers) == 80  # 40 customers in each of two tenants: same ids
        for tenant, customer in customers:
            await check(tenant, customer, expected_customer_summaries(events, tenant, customer))
        # every filter, on a few customers of both tenants
        for tenant, customer in customers[::13]:
            mine = [e for e in events if e.tenant == tenant and e.customer == customer]
            offer, channel = mine[0].action, next(e.channel for e in mine if e.channel)
            treatment = next(e.treatment for e in mine if e.treatment)
            for period in PERIODS:
                want = expected_customer_summaries(events, tenant, customer, (period,))
                await check(tenant, customer, want, periodType=period)
            want = expected_customer_summaries(events, tenant, customer, offer=offer)
            await check(tenant, customer, want, offerId=offer)
            await check(tenant, customer, want, actionId=offer)
            want = expected_customer_summaries(events, tenant, customer, treatment=treatment)
            await check(tenant, customer, want, creativeId=treatment)
            want = expected_customer_summaries(
                events, tenant, customer, ("monthly",), offer=offer, channel=channel
            )
            await check(
                tenant, customer, want, periodType="monthly", offerId=offer, channelId=channel
            )
            for days in (1, 7, 30):
                want = expected_customer_summaries(events, tenant, customer, days=days, now=now)
                await check(tenant, customer, want, days=days)
        # limit caps the rows, total counts them all
        tenant, customer = customers[0]
        want = expected_customer_summaries(events, tenant, customer)
        response = await client.get(
            SUMMARIES,
            params={"customerId": customer, "limit": 3},
            headers=_auth(tenant_keys[tenant]),
        )
        assert response.json() == {"data": want[:3], "total": len(want)}
        unknown = await client.get(
            SUMMARIES, params={"customerId": "nobody"}, headers=_auth(keys["viewer"])
        )
        assert unknown.json() == {"data": [], "total": 0}


async def test_history_pages_are_newest_first_and_stable_while_events_flow(
    settings: Settings, start_worker, start_api
) -> None:
    events = await _fed(settings, start_worker, 1500, seed=13)
    api = await start_api(settings)
    keys = await _keys(settings)
    customer = "C-003"
    before = {e.id: e for e in events if e.tenant == "default" and e.customer == customer}
    assert len(before) > 15
    now = datetime.now(UTC)
    seen: list[dict[str, Any]] = []
    flowed = 0
    async with httpx.AsyncClient(base_url=api.url, timeout=10, headers=_auth(keys["viewer"])) as c:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"customerId": customer, "limit": 4}
            if cursor:
                params["cursor"] = cursor
            response = await c.get(HISTORY, params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            seen.extend(body["data"])
            assert body["pagination"]["limit"] == 4
            if not body["pagination"]["hasMore"]:
                assert body["pagination"]["nextCursor"] is None
                break
            cursor = body["pagination"]["nextCursor"]
            # events keep flowing between pages: new ones, and late ones behind the cursor
            flow = []
            for k in range(4):
                flowed += 1
                ts = now + timedelta(seconds=flowed) if k % 2 else now - timedelta(days=flowed % 40)
                flow.append(
                    {"id": f"flow-{flowed:04d}", "timestamp": ts.isoformat(), "customerId": customer,
                     "actionId": "act-01", "type": "click"}
                )  # fmt: skip
            await produce(settings, flow)
        # the first page's instant: every event it held comes exactly once, newest first
        ids = [row["id"] for row in seen]
        assert len(ids) == len(set(ids)), "no event twice"
        assert set(before) <= set(ids)
        moments = [datetime.fromisoformat(row["timestamp"]) for row in seen]
        assert moments == sorted(moments, reverse=True)
        new_ones = [i for i in ids if i.startswith("flow-")]
        assert all(
            datetime.fromisoformat(r["timestamp"]) < now for r in seen if r["id"] in new_ones
        )
        for row in seen:
            if row["id"] in before:
                e = before[row["id"]]
                assert row == {
                    "id": e.id, "timestamp": e.ts.isoformat().replace("+00:00", "Z"),
                    "customerId": customer, "actionId": e.action, "offerId": e.action,
                    "treatmentId": e.treatment, "creativeId": e.treatment,
                    "channelId": e.channel, "type": e.type, "direction": None,
                }  # fmt: skip

        # filters: type, offer (and its alias), creative
        for params, keep in (
            ({"type": "click"}, lambda e: e.type == "click"),
            ({"offerId": "act-01"}, lambda e: e.action == "act-01"),
            ({"actionId": "act-01"}, lambda e: e.action == "act-01"),
            ({"creativeId": "tr-02"}, lambda e: e.treatment == "tr-02"),
            ({"channelId": "web", "type": "impression"}, lambda e: (e.channel, e.type) == ("web", "impression")),
        ):  # fmt: skip
            response = await c.get(HISTORY, params={"customerId": customer, "limit": 200, **params})
            got = {row["id"] for row in response.json()["data"]}
            assert {i for i, e in before.items() if keep(e)} <= got, params
            assert all(keep(before[i]) for i in got if i in before), params
        # tenant isolation: acme's C-003 is another customer
        acme = await c.get(
            HISTORY, params={"customerId": customer, "limit": 200}, headers=_auth(keys["acme"])
        )
        acme_ids = {row["id"] for row in acme.json()["data"]}
        assert acme_ids == {e.id for e in events if e.tenant == "acme" and e.customer == customer}


async def test_missing_and_bad_parameters_answer_the_json_error_body(
    settings: Settings, start_api, as_api_role
) -> None:
    api = await start_api(await as_api_role(settings))  # no erasure grants
    keys = await _keys(settings)
    cases: list[tuple[str, str, dict[str, Any], str | None, int, str]] = [
        ("GET", SUMMARIES, {}, keys["viewer"], 400, "MISSING_CUSTOMER_ID"),
        ("GET", HISTORY, {}, keys["viewer"], 400, "MISSING_CUSTOMER_ID"),
        ("GET", HISTORY, {"customerId": "c", "cursor": "nonsense"}, keys["viewer"], 400, "INVALID_CURSOR"),
        ("GET", SUMMARIES, {"customerId": "c", "periodType": "hourly"}, keys["viewer"], 422, "INVALID_PARAMETER"),
        ("GET", SUMMARIES, {"customerId": "c", "days": 0}, keys["viewer"], 422, "INVALID_PARAMETER"),
        ("GET", SUMMARIES, {"customerId": "c", "days": 7, "periodType": "daily"}, keys["viewer"], 422, "INVALID_PARAMETER"),
        ("GET", SUMMARIES, {"customerId": "c", "limit": 0}, keys["viewer"], 422, "INVALID_PARAMETER"),
        ("GET", SUMMARIES, {"customerId": "c", "offerId": "a", "actionId": "b"}, keys["viewer"], 422, "INVALID_PARAMETER"),
        ("GET", SUMMARIES, {"customerId": "x" * 129}, keys["viewer"], 422, "INVALID_PARAMETER"),
        ("GET", HISTORY, {"customerId": "a\x00b"}, keys["viewer"], 422, "INVALID_PARAMETER"),
        ("GET", HISTORY, {"customerId": "c", "type": "Click!"}, keys["viewer"], 422, "INVALID_PARAMETER"),
        ("GET", HISTORY, {"customerId": "c"}, None, 401, "MISSING_API_KEY"),
        ("DELETE", "/api/v1/customers/c", {}, keys["viewer"], 403, "FORBIDDEN"),
        ("DELETE", "/api/v1/customers/c", {}, keys["editor"], 403, "FORBIDDEN"),
        ("DELETE", "/api/v1/customers/c", {}, keys["admin"], 403, "ERASURE_NOT_PERMITTED"),
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        for method, path, params, key, status, code in cases:
            headers = _auth(key) if key else {}
            response = await client.request(method, path, params=params, headers=headers)
            assert response.status_code == status, (path, params, response.text)
            error = response.json()["error"]
            assert (error["code"], error["status"]) == (code, status), (path, params)
            assert error["message"], (path, params)
        limit = await client.get(
            SUMMARIES, params={"customerId": "c", "limit": 999}, headers=_auth(keys["viewer"])
        )
        assert limit.status_code == 200  # capped at 200, like the summary endpoint's 500


def test_readme_shows_the_erasure_grants() -> None:
    from tests.integration.test_compose import _security_section

    block = _security_section().split("ERASURE_NOT_PERMITTED", 1)[1].split("```sql\n", 1)[1]
    shown = [line.rstrip(";") for line in block.split("```", 1)[0].splitlines()]
    assert shown == erasure_grants("interaction_summary_api")


async def test_erasure_while_events_flow_leaves_every_store_equal_to_a_recount_without_them(
    settings: Settings, start_worker, start_api, as_api_role
) -> None:
    events = await _fed(settings, start_worker, 3000, seed=14)
    restricted = await as_api_role(settings)
    await grant_erasure(settings, restricted)
    api = await start_api(restricted)
    keys = await _keys(settings)
    gone = "C-007"
    theirs = [e for e in events if e.tenant == "default" and e.customer == gone]
    assert theirs and any(e.tenant == "acme" and e.customer == gone for e in events)
    # More traffic flows meanwhile, of other customers (whose counts must stay exact).
    more = make_traffic(2000, seed=15)
    flowing = [m for m in more.messages if not isinstance(m, dict) or m["customerId"] != gone]
    for m in flowing:
        if isinstance(m, dict):
            m["id"] = "more-" + m["id"]
    publishing = asyncio.create_task(produce(settings, flowing))
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        await asyncio.sleep(0.3)  # let some of it be counted: the erasure lands mid-flow
        erased = await client.delete(f"/api/v1/customers/{gone}", headers=_auth(keys["admin"]))
        await publishing
        assert erased.status_code == 200, erased.text
        body = erased.json()
        assert body["customerId"] == gone
        assert body["postgres"]["events"] == len(theirs)
        assert body["postgres"]["bucketsDeleted"] > 0
        assert body["redis"]["applied"] is True and body["redis"]["buckets"] > 0

        kept = [e for e in events if not (e.tenant == "default" and e.customer == gone)]
        kept += distinct_events([m for m in more.valid if m["customerId"] != gone])
        await wait_for_exact_stores(settings, expected_buckets(kept), len(kept))
        # custom outcome types (hover_3s) leave their per-type counts too, in both stores
        assert any(e.type not in SYSTEM_TYPES for e in theirs)
        want = expected_outcomes(kept)
        assert await postgres_outcomes(settings.database_url) == want
        hot = kept_in_redis({bucket: None for bucket, _ in want})
        in_redis = {k: v for k, v in want.items() if k[0] in hot}
        assert await redis_outcomes(settings.redis_url, settings.redis_prefix) == in_redis

        # their old events published again are not counted again; a new one is
        again = [m for m in make_traffic(3000, seed=14).valid if m["customerId"] == gone]
        new = {"id": "after-erasure", "timestamp": datetime.now(UTC).isoformat(),
               "customerId": gone, "actionId": "act-01", "channelId": "web", "type": "click"}  # fmt: skip
        await produce(settings, [*again, new])
        kept += distinct_events([new])
        await wait_for_exact_stores(settings, expected_buckets(kept), len(kept))

        response = await client.get(
            SUMMARIES, params={"customerId": gone, "limit": 200}, headers=_auth(keys["viewer"])
        )
        want = expected_customer_summaries(kept, "default", gone)
        assert response.json() == {"data": want, "total": len(want)}
        assert len(want) == 4  # the new event's four periods
        # a second erasure finds nothing but the new event
        again_erased = await client.delete(
            f"/api/v1/customers/{gone}", headers=_auth(keys["admin"])
        )
        assert again_erased.json()["postgres"]["events"] == 1
    audit = [line for line in api.logs().splitlines() if "customer.erase" in line]
    assert len(audit) == 2
    assert gone not in api.logs()  # neither the audit lines nor the access log name them


async def test_a_database_of_the_previous_schema_gains_customer_reads_in_place(
    empty_database: str, make_settings, start_api
) -> None:
    """Migration 0006 on a database counted by the schema before it: the same numbers, and
    per-customer reads and erasure on top, served by the index it adds."""
    dsn = empty_database
    events = distinct_events(make_traffic(1200, seed=16).valid)
    conn = await asyncpg.connect(dsn)
    try:
        before_0006 = [n for v, n, _ in migration_files() if v < 6]
        assert await migrate(conn, up_to=5) == before_0006
        await conn.executemany(
            "INSERT INTO interaction_history (tenant_id, event_id, ts, customer_id, action_id,"
            " treatment_id, channel_id, type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [(e.tenant, e.id, e.ts, e.customer, e.action, e.treatment, e.channel, e.type)
             for e in events],
        )  # fmt: skip
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            await rebuild_postgres(pool)  # counted by the schema before 0006
        finally:
            await pool.close()
        before = await postgres_buckets(dsn)
        assert before == expected_buckets(events)
        assert "0006_customers.sql" in await migrate(conn)
        assert await postgres_buckets(dsn) == before
        plan = await conn.fetch(
            "EXPLAIN (FORMAT TEXT) SELECT * FROM interaction_history"
            " WHERE tenant_id = 'default' AND customer_id = 'C-001' ORDER BY ts DESC LIMIT 5"
        )
        # each partition's copy of the index (0008 partitions the history by month)
        assert re.search(
            r"Index Scan\S* using interaction_history_\w*customer", " ".join(r[0] for r in plan)
        )
    finally:
        await conn.close()
    template = await make_settings()
    settings = Settings(**{**template.model_dump(), "database_url": dsn})
    api = await start_api(settings)
    keys = await _keys(settings)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        for tenant, customer in _customers(events)[::7]:
            key = keys["viewer"] if tenant == "default" else keys["acme"]
            response = await client.get(
                SUMMARIES, params={"customerId": customer, "limit": 200}, headers=_auth(key)
            )
            want = expected_customer_summaries(events, tenant, customer)
            assert response.json() == {"data": want[:200], "total": len(want)}
        erased = await client.delete("/api/v1/customers/C-002", headers=_auth(keys["admin"]))
        assert erased.status_code == 200, erased.text
    kept = [e for e in events if (e.tenant, e.customer) != ("default", "C-002")]
    assert await postgres_buckets(dsn) == expected_buckets(kept)
