"""Issue 11: outcome types. Custom types counted exactly in every store, classified when the
API answers (a change applies to all history at once, also while events flow), system types
immutable, each tenant's registry its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from redis.asyncio import Redis

from api.auth import Role, create_key
from core.config import Settings
from core.schema import SYSTEM_CLASSES, Classification
from tests.integration.api_oracle import (
    QUERIES,
    ApiClient,
    Recount,
    assert_api_matches_recount,
)
from tests.integration.credentials import make_keys
from tests.integration.publishing import Publisher
from tests.integration.stores import (
    kept_in_redis,
    postgres_outcomes,
    redis_outcomes,
    wait_for_exact_stores,
)
from tests.integration.traffic import CUSTOM_TYPES, custom_traffic
from tests.recount import distinct_events, expected_buckets, expected_outcomes
from tests.support import produce, run_cli

TYPES = "/api/v1/outcome-types"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def register(url: str, key: str, key_name: str, classification: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=auth(key)) as client:
        body = {"key": key_name, "name": key_name.title(), "classification": classification}
        made = await client.post(TYPES, json=body)
        if made.status_code == 409:
            made = await client.put(f"{TYPES}/{key_name}", json={"classification": classification})
        assert made.status_code in (200, 201), made.text


async def test_custom_types_are_counted_exactly_and_every_store_answers_alike(
    settings: Settings, start_worker, start_api
) -> None:
    traffic = custom_traffic(2500, seed=111)
    worker = start_worker(settings)
    api = await start_api(settings)
    keys = await make_keys(settings.database_url)
    await produce(settings, traffic.messages)
    events = distinct_events(traffic.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))

    want = expected_outcomes(events)
    assert {t for (_, t) in want} == {*CUSTOM_TYPES, "hover_3s"}
    assert await postgres_outcomes(settings.database_url) == want
    kept = kept_in_redis({bucket: None for bucket, _ in want})
    in_redis = {k: v for k, v in want.items() if k[0] in kept}
    assert await redis_outcomes(settings.redis_url, settings.redis_prefix) == in_redis

    # Registered after the events were counted: their past counts are classified at once.
    await register(api.url, keys["editor"], "applied", "positive")
    await register(api.url, keys["editor"], "deferred", "negative")
    client = ApiClient(api.url, {"default": keys["viewer:default"], "acme": keys["viewer:acme"]})
    classes = {"default": {"applied": "positive", "deferred": "negative"}}  # acme: none
    await assert_api_matches_recount(client, Recount(events, classes), period_source="redis")

    # A deleted type keeps its counts, unclassified (neutral).
    async with httpx.AsyncClient(base_url=api.url, headers=auth(keys["editor"])) as http:
        assert (await http.delete(f"{TYPES}/deferred")).status_code == 200
    classes = {"default": {"applied": "positive"}}
    await assert_api_matches_recount(client, Recount(events, classes), timeout=5)

    # The same bodies from Redis, the Postgres buckets and the raw history.
    async def answers() -> list[dict[str, Any]]:
        return [(await client.get("default", q)).json() for q in QUERIES]

    from_redis = await answers()
    worker.stop()  # a running worker would resync Redis at once
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.delete(*[k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:*")])
    finally:
        await redis.aclose()
    from_postgres = await answers()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("TRUNCATE interaction_bucket, distinct_seen, interaction_bucket_outcome")
    finally:
        await conn.close()
    from_history = await answers()
    applied_rows = 0
    for q, a, b, c in zip(QUERIES, from_redis, from_postgres, from_history, strict=True):
        assert (b["source"], c["source"]) == ("postgres", "history"), q
        assert a["source"] == ("postgres" if q["window"] == "rolling" else "redis"), q
        assert {**a, "source": None} == {**b, "source": None} == {**c, "source": None}, q
        applied_rows += sum(1 for row in a["summary"] if row["outcomes"].get("applied"))
    assert applied_rows > 100  # the comparison covered custom counts, not only zeros


def _follows(row: dict[str, Any], classes: dict[str, str]) -> bool:
    """An action row's sentiment is its own outcomes summed by ``classes``."""
    classification = {**classes, **{k: v.value for k, v in SYSTEM_CLASSES.items()}}
    sums = {c.value: 0 for c in Classification}
    for key, n in row["outcomes"].items():
        sums[classification.get(key, "neutral")] += n
    neutral = max(row["impression"] - sums["positive"] - sums["negative"], 0)
    return (row["positive"], row["negative"], row["neutral"]) == (
        sums["positive"], sums["negative"], neutral
    )  # fmt: skip


async def test_a_reclassification_applies_to_all_history_in_the_next_answer_while_events_flow(
    settings: Settings, start_worker, start_api
) -> None:
    first = custom_traffic(1500, seed=121)
    start_worker(settings)
    api = await start_api(settings)
    keys = await make_keys(settings.database_url)
    await produce(settings, first.messages)
    counted = distinct_events(first.valid)
    await wait_for_exact_stores(settings, expected_buckets(counted), len(counted))
    client = ApiClient(api.url, {"default": keys["viewer:default"]})
    action_queries = [q for q in QUERIES if q["groupBy"] == "action"]

    second = custom_traffic(3000, seed=122, id_prefix="flow-")
    checked = 0
    async with Publisher(settings) as publisher:
        flowing = asyncio.create_task(publisher.send(second.messages, rate=600))
        cycle = ["positive", "negative", "neutral", "positive"]
        for i in range(12):
            classification = cycle[i % len(cycle)]
            await register(api.url, keys["editor"], "applied", classification)
            classes = {"applied": classification}
            for q in action_queries:  # the very next answers, while events are counted
                body = (await client.get("default", q)).json()
                bad = [row for row in body["summary"] if not _follows(row, classes)]
                assert not bad, (classification, q, bad[:2])
                checked += sum(1 for row in body["summary"] if row["outcomes"].get("applied"))
        await flowing
    assert checked > 50

    everything = distinct_events(first.valid + second.valid)
    await wait_for_exact_stores(settings, expected_buckets(everything), len(everything))
    classes = {"default": {"applied": cycle[11 % len(cycle)]}}
    await assert_api_matches_recount(client, Recount(everything, classes), period_source="redis")


async def test_system_types_are_immutable_and_each_tenant_has_its_own_registry(
    settings: Settings, start_api, tmp_path: Path
) -> None:
    api = await start_api(settings)
    keys = await make_keys(settings.database_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        acme_editor = await create_key(pool, Role.EDITOR, "acme")
    finally:
        await pool.close()
    async with (
        httpx.AsyncClient(base_url=api.url, timeout=10, headers=auth(keys["editor"])) as ours,
        httpx.AsyncClient(base_url=api.url, timeout=10, headers=auth(acme_editor)) as theirs,
    ):
        listed = (await ours.get(TYPES)).json()["data"]
        assert [t["key"] for t in listed] == ["impression", "click", "dismiss", "accept", "convert"]
        assert all(t["system"] for t in listed)
        assert {t["key"]: t["classification"] for t in listed} == {
            "impression": "neutral", "click": "positive", "dismiss": "negative",
            "accept": "positive", "convert": "neutral",
        }  # fmt: skip

        refused = [
            await ours.post(
                TYPES, json={"key": "click", "name": "C", "classification": "negative"}
            ),
            await ours.put(f"{TYPES}/click", json={"classification": "negative"}),
            await ours.delete(f"{TYPES}/dismiss"),
        ]
        for answer in refused:
            assert answer.status_code == 409, answer.text
            error = answer.json()["error"]
            assert (error["code"], error["status"]) == ("SYSTEM_OUTCOME_TYPE", 409)
        assert (await ours.get(TYPES)).json()["data"] == listed  # nothing changed

        new = {"key": "applied", "name": "Applied", "classification": "positive", "ordinal": 15}
        made = await ours.post(TYPES, json=new)
        assert made.status_code == 201, made.text
        assert (made.json()["version"], made.json()["system"]) == (1, False)
        assert (await ours.post(TYPES, json=new)).json()["error"]["code"] == "OUTCOME_TYPE_EXISTS"
        changed = await ours.put(f"{TYPES}/applied", json={"classification": "negative"})
        assert (changed.json()["classification"], changed.json()["version"]) == ("negative", 2)
        keys_in_order = [t["key"] for t in (await ours.get(TYPES)).json()["data"]]
        assert keys_in_order == ["impression", "applied", "click", "dismiss", "accept", "convert"]

        # the other tenant sees none of it and may define the same key its own way
        assert "applied" not in [t["key"] for t in (await theirs.get(TYPES)).json()["data"]]
        missing = await theirs.put(f"{TYPES}/applied", json={"classification": "positive"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "OUTCOME_TYPE_NOT_FOUND"
        assert (await theirs.delete(f"{TYPES}/applied")).status_code == 404
        theirs_made = await theirs.post(TYPES, json={**new, "classification": "neutral"})
        assert theirs_made.status_code == 201
        ours_now = (await ours.get(TYPES)).json()["data"]
        assert {t["key"]: t["classification"] for t in ours_now}["applied"] == "negative"

        # soft delete: gone from the list, kept with includeDeleted, and can come back
        assert (await ours.delete(f"{TYPES}/applied")).json()["deletedAt"] is not None
        assert "applied" not in [t["key"] for t in (await ours.get(TYPES)).json()["data"]]
        with_deleted = (await ours.get(TYPES, params={"includeDeleted": "true"})).json()["data"]
        assert [t["version"] for t in with_deleted if t["key"] == "applied"] == [3]
        assert (await ours.put(f"{TYPES}/applied", json={"name": "x"})).status_code == 404
        again = await ours.post(TYPES, json=new)
        assert (again.status_code, again.json()["version"]) == (201, 4)

        for bad in ({**new, "key": "Applied!"}, {**new, "classification": "great"}, {"key": "x"}):
            assert (await ours.post(TYPES, json=bad)).status_code == 422

    # The CLI loads a file for a tenant.
    doc = {
        "outcomeTypes": [
            {"key": "quote_requested", "name": "Quote", "classification": "positive"},
            {"key": "applied", "name": "Applied", "classification": "positive"},
        ]
    }
    path = tmp_path / "types.json"
    path.write_bytes(orjson.dumps(doc))
    done = await run_cli(settings, "outcome-types", "load", str(path), "--tenant", "acme")
    assert done.returncode == 0, done.stderr
    refused_file = tmp_path / "system.json"
    refused_file.write_bytes(
        orjson.dumps({"outcomeTypes": [{"key": "click", "name": "C", "classification": "neutral"}]})
    )
    refused_load = await run_cli(settings, "outcome-types", "load", str(refused_file))
    assert refused_load.returncode == 1 and "system type" in refused_load.stderr
    async with httpx.AsyncClient(base_url=api.url, headers=auth(acme_editor)) as theirs:
        loaded = {t["key"]: t for t in (await theirs.get(TYPES)).json()["data"]}
    assert loaded["applied"]["classification"] == "positive"  # replaced by the file
    assert loaded["quote_requested"]["version"] == 1
