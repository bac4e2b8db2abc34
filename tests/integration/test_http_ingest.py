"""Issue 15: HTTP ingestion on real servers.

- Events POSTed in batches (with invalid items and a retried request) are counted exactly once;
  each rejected item is reported by index and reason, and the topic holds exactly the accepted
  ones: nothing rejected was ever published.
- A mixed load, Kafka producers and HTTP at once (the same ids on both paths included), ends
  with both stores and every API answer equal to the recount.
- A broker that goes away is a 503 with nothing reported accepted; the retried request, once the
  broker is back, is counted exactly once.
- The respond shapes (KaireonAI's), direction stored in the history.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.auth import Role, create_key
from core.config import Settings
from core.db import create_pool
from embedded.processes import free_port
from streams.topics import ensure_topics, service_topics
from tests.integration.api_oracle import ApiClient, Recount, assert_api_matches_recount
from tests.integration.faults import own_kafka
from tests.integration.publishing import Publisher, wave
from tests.integration.stores import history_count, wait_for_exact_stores
from tests.recount import distinct_events, expected_buckets
from tests.support import wait_until

INTERACTIONS = "/api/v1/interactions"


async def _keys(settings: Settings, *specs: tuple[Role, str]) -> list[str]:
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return [await create_key(pool, role, tenant) for role, tenant in specs]
    finally:
        await pool.close()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _by_tenant(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e.get("tenantId") or "default", []).append(e)
    return out


# Items no worker would count, each with a word of the reason it must be rejected for.
INVALID_ITEMS: list[tuple[Any, str]] = [
    ({"id": "bad-type", "timestamp": 0, "customerId": "C", "actionId": "A", "type": "Click!"}, "type"),
    ({"timestamp": 0, "customerId": "C", "actionId": "A", "type": "click"}, "'id' is required"),
    ({"id": "x" * 129, "timestamp": 0, "customerId": "C", "actionId": "A", "type": "click"}, "'id'"),
    ({"id": "future", "timestamp": "2999-01-01T00:00:00Z", "customerId": "C", "actionId": "A",
      "type": "click"}, "future"),
    ({"id": "dir", "timestamp": 0, "customerId": "C", "actionId": "A", "type": "click",
      "direction": "up"}, "direction"),
    ("a string", "not a JSON object"),
    ([1, 2], "not a JSON object"),
]  # fmt: skip


def _with_invalid(events: list[dict[str, Any]], every: int, start: int) -> tuple[list[Any], dict]:
    """``events`` with an invalid item after every ``every`` of them; {index: reason word}."""
    body: list[Any] = []
    bad: dict[int, str] = {}
    for i, event in enumerate(events):
        if i % every == every - 1:
            item, word = INVALID_ITEMS[(start + i) % len(INVALID_ITEMS)]
            bad[len(body)] = word
            body.append(item)
        body.append(event)
    return body, bad


async def _topic_ids(settings: Settings, topic: str) -> list[str]:
    """The id of every message in ``topic``, read from the beginning to the current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata partitions_for_topic reads
        count = len(consumer.partitions_for_topic(topic) or ())
        assert count, f"topic {topic} has no partitions"
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        ids: list[str] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                ids += [orjson.loads(m.value)["id"] for m in messages]
        return ids
    finally:
        await consumer.stop()


async def test_posted_events_count_once_with_retries_and_rejects_are_never_published(
    settings: Settings, start_worker, start_api
) -> None:
    start_worker(settings)
    api = await start_api(settings)
    producer, acme, viewer, viewer_acme = await _keys(
        settings,
        (Role.PRODUCER, "default"),
        (Role.EDITOR, "acme"),  # editors may ingest too
        (Role.VIEWER, "default"),
        (Role.VIEWER, "acme"),
    )
    traffic = wave(900, seed=15, prefix="h-")  # duplicates inside included
    tenants = _by_tenant(traffic.valid)
    published: list[str] = []
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:

        async def post(key: str, events: list[dict[str, Any]], start: int) -> None:
            body, bad = _with_invalid(events, 40, start)
            response = await client.post(INTERACTIONS, json=body, headers=_bearer(key))
            assert response.status_code == 202, response.text[:300]
            answer = response.json()
            assert answer["accepted"] == len(events)
            assert {r["index"] for r in answer["rejected"]} == set(bad)
            for r in answer["rejected"]:
                assert bad[r["index"]] in r["error"], r
            published.extend(e["id"] for e in events)

        jobs = []
        for tenant, key in (("default", producer), ("acme", acme)):
            events = tenants[tenant]
            for start in range(0, len(events), 250):
                jobs.append(post(key, events[start : start + 250], start))
        await asyncio.gather(*jobs)  # concurrent requests

        # The very same request again (a client retry): accepted again, counted once.
        retry = tenants["default"][:250]
        await post(producer, retry, 0)
        # One event as an object, and the answer for a body with nothing valid.
        single = await client.post(INTERACTIONS, json=retry[0], headers=_bearer(producer))
        assert single.status_code == 202 and single.json() == {"accepted": 1, "rejected": []}
        published.append(retry[0]["id"])
        nothing = await client.post(
            INTERACTIONS, json=[INVALID_ITEMS[0][0], "x"], headers=_bearer(producer)
        )
        assert nothing.status_code == 422
        assert nothing.json()["error"]["code"] == "NO_VALID_EVENT"
        assert [r["index"] for r in nothing.json()["rejected"]] == [0, 1]

    events = distinct_events(traffic.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    # The topic holds exactly what was acknowledged (retries included), nothing rejected.
    assert sorted(await _topic_ids(settings, settings.topic)) == sorted(published)
    assert await _topic_ids(settings, settings.dlq_topic) == []
    await assert_api_matches_recount(
        ApiClient(api.url, {"default": viewer, "acme": viewer_acme}), Recount(events)
    )


async def test_mixed_http_and_kafka_load_ends_equal_to_the_recount(
    settings: Settings, start_worker, start_api
) -> None:
    start_worker(settings)
    api = await start_api(settings)
    default, acme, viewer, viewer_acme = await _keys(
        settings,
        (Role.PRODUCER, "default"),
        (Role.PRODUCER, "acme"),
        (Role.VIEWER, "default"),
        (Role.VIEWER, "acme"),
    )
    over_kafka = wave(1500, seed=21, prefix="k-", invalid_count=20)
    # HTTP carries its own events and some that also go through Kafka (same ids, both paths).
    over_http = wave(1500, seed=22, prefix="h-", republish=over_kafka.valid[::50])
    by_tenant = _by_tenant(over_http.valid)
    keys = {"default": default, "acme": acme}

    async def http_load(client: httpx.AsyncClient) -> None:
        for tenant, events in by_tenant.items():
            for start in range(0, len(events), 100):
                response = await client.post(
                    INTERACTIONS, json=events[start : start + 100], headers=_bearer(keys[tenant])
                )
                assert response.status_code == 202, response.text[:300]
                assert not response.json()["rejected"]

    async with (
        Publisher(settings) as publisher,
        httpx.AsyncClient(base_url=api.url, timeout=30) as client,
    ):
        await asyncio.gather(publisher.send(over_kafka.messages, rate=3000), http_load(client))

    events = distinct_events(over_kafka.valid + over_http.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    await assert_api_matches_recount(
        ApiClient(api.url, {"default": viewer, "acme": viewer_acme}), Recount(events)
    )


async def test_a_broker_outage_is_a_503_with_nothing_accepted_and_the_retry_counts_once(
    make_settings, start_worker, start_api, tmp_path: Path
) -> None:
    kafka = own_kafka(tmp_path)
    services = []
    phases: dict[str, float] = {}
    try:
        settings = await make_settings(
            kafka_bootstrap_servers=kafka.url, ingest_publish_timeout_seconds=2.0
        )
        api = await start_api(settings)
        services.append(api)
        (producer,) = await _keys(settings, (Role.PRODUCER, "default"))
        before, during, after = (
            _by_tenant(wave(80, seed=seed, prefix=prefix).valid)["default"]
            for seed, prefix in ((1, "a-"), (2, "b-"), (3, "c-"))
        )
        outcome = {"customerId": "C", "offerId": "A", "outcome": "click", "idempotencyKey": "r-1"}
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            ok = await client.post(INTERACTIONS, json=before, headers=_bearer(producer))
            assert ok.status_code == 202, ok.text  # connected: what follows is an outage

            began = time.monotonic()
            kafka.kill()  # (SIGTERM waits 5 s for the API's open connection)
            phases["broker stop"] = time.monotonic() - began
            for path, body in (
                (INTERACTIONS, during),
                (INTERACTIONS, during[0]),
                ("/api/v1/respond", outcome),
                ("/api/v1/respond/bulk", {"outcomes": [outcome]}),
            ):
                began = time.monotonic()
                refused = await client.post(path, json=body, headers=_bearer(producer))
                assert refused.status_code == 503, (path, refused.text)
                assert time.monotonic() - began < 2.0 + 3, "503 within the publish timeout"
                assert set(refused.json()) == {"error"}, "nothing reported accepted"
                assert refused.json()["error"]["code"] == "BROKER_UNAVAILABLE"

            # Back (Tansu keeps topics in memory: a restart brings an empty broker, as after
            # losing its disk; "before" is gone with it and is not expected below).
            began = time.monotonic()
            kafka.start()
            await ensure_topics(settings.kafka_bootstrap_servers, service_topics(settings))
            phases["broker back"] = time.monotonic() - began

            async def retried() -> bool:
                again = await client.post(INTERACTIONS, json=during, headers=_bearer(producer))
                assert again.status_code in (202, 503), again.text
                return again.status_code == 202

            await wait_until(retried, 60, 0.5, "the API never published again")
            phases["retry accepted"] = time.monotonic() - began
            ok = await client.post(INTERACTIONS, json=after, headers=_bearer(producer))
            assert ok.status_code == 202, ok.text
        began = time.monotonic()
        services.append(start_worker(settings))
        events = distinct_events(during + after)
        await wait_for_exact_stores(settings, expected_buckets(events), len(events))
        phases["counted"] = time.monotonic() - began
        print(f"\nOUTAGE phases (s): { {k: round(v, 1) for k, v in phases.items()} }")
    finally:
        for service in reversed(services):  # before their broker, or they wait for it to stop
            service.stop()
        kafka.stop()


async def test_an_api_whose_broker_never_answers_refuses_at_once_and_stays_healthy(
    settings: Settings, start_api
) -> None:
    nowhere = settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "ingest_publish_timeout_seconds": 1.0,
        }
    )
    api = await start_api(nowhere)
    (producer,) = await _keys(settings, (Role.PRODUCER, "default"))
    event = wave(1, seed=5, prefix="n-").valid[0]
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        began = time.monotonic()
        refused = await client.post(INTERACTIONS, json=event, headers=_bearer(producer))
        assert refused.status_code == 503 and time.monotonic() - began < 1.0
        assert refused.json()["error"]["code"] == "BROKER_UNAVAILABLE"
        assert (await client.get("/health")).status_code == 200
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["kafka"] != "ok"


async def test_respond_shapes_and_direction_in_the_history(
    settings: Settings, start_worker, start_api
) -> None:
    start_worker(settings)
    api = await start_api(settings)
    producer, admin = await _keys(settings, (Role.PRODUCER, "acme"), (Role.ADMIN, "acme"))
    now = datetime.now(UTC).replace(microsecond=0)
    base = {"customerId": "C-1", "offerId": "act-1", "creativeId": "tr-1", "channelId": "web"}
    async with httpx.AsyncClient(base_url=api.url, timeout=30, headers=_bearer(producer)) as client:
        catalog = await client.put(
            "/api/v1/catalog",
            json={"treatments": [{"id": "tr-7", "actionId": "act-7", "channelId": "email"}]},
            headers=_bearer(admin),
        )
        assert catalog.status_code == 200, catalog.text
        one = await client.post(
            "/api/v1/respond",
            json={**base, "outcome": "click", "idempotencyKey": "k-1",
                  "timestamp": now.isoformat(), "context": {"utm": "x"}},
        )  # fmt: skip
        assert one.status_code == 200, one.text
        assert one.json() == {
            "interactionId": "k-1", "customerId": "C-1", "outcome": "click", "offerId": "act-1",
            "creativeId": "tr-1", "channelId": "web", "direction": "inbound",
            "timestamp": now.isoformat().replace("+00:00", "Z"), "status": "recorded",
        }  # fmt: skip
        again = await client.post(
            "/api/v1/respond", json={**base, "outcome": "click", "idempotencyKey": "k-1"}
        )
        assert again.status_code == 200  # a retry: accepted, counted once
        header = await client.post(
            "/api/v1/respond",
            json={"customerId": "C-2", "creativeId": "tr-7", "outcome": "impression"},
            headers={"Idempotency-Key": "k-2"},
        )
        assert header.status_code == 200, header.text
        assert (header.json()["offerId"], header.json()["channelId"]) == ("act-7", "email")
        assert header.json()["direction"] == "outbound"  # impressions are outbound

        refused = {
            "no key": ({**base, "outcome": "click"}, 400, "IDEMPOTENCY_KEY_REQUIRED"),
            "recommendation": (
                {"customerId": "C", "recommendationId": "rec-1", "rank": 1, "outcome": "click",
                 "idempotencyKey": "k-9"}, 422, "RECOMMENDATION_NOT_SUPPORTED"),
            "bad outcome": ({**base, "outcome": "Click", "idempotencyKey": "k-9"}, 422,
                            "INVALID_OUTCOME"),
        }  # fmt: skip
        for name, (body, status, code) in refused.items():
            response = await client.post("/api/v1/respond", json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), name

        bulk = await client.post(
            "/api/v1/respond/bulk",
            json={"outcomes": [
                {**base, "outcome": "convert", "idempotencyKey": "b-1", "direction": "outbound"},
                {**base, "outcome": "dismiss"},
                {**base, "outcome": "applied", "idempotencyKey": "b-3"},
                {**base, "outcome": "click", "idempotencyKey": "b-4",
                 "timestamp": (now + timedelta(hours=1)).isoformat()},
            ]},
        )  # fmt: skip
        assert bulk.status_code == 200, bulk.text
        manifest = bulk.json()
        assert {k: manifest[k] for k in ("processed", "succeeded", "failed")} == {
            "processed": 4, "succeeded": 2, "failed": 2
        }  # fmt: skip
        assert [e["index"] for e in manifest["errors"]] == [1, 3]
        assert "idempotencyKey" in manifest["errors"][0]["error"]
        assert "future" in manifest["errors"][1]["error"]
        failed = await client.post(
            "/api/v1/respond/bulk", json={"outcomes": [{**base, "outcome": "click"}]}
        )
        assert failed.status_code == 422 and failed.json()["succeeded"] == 0
        assert failed.json()["error"]["code"] == "NO_VALID_OUTCOME"
        too_many = await client.post(
            "/api/v1/respond/bulk", json={"outcomes": [{**base, "outcome": "click"}] * 1001}
        )
        assert too_many.status_code == 422

    await wait_until(lambda: _history_is(settings, 4), 60, 0.2, "history never held 4 events")
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_id, tenant_id, type, direction, action_id, channel_id"
            " FROM interaction_history ORDER BY event_id"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        ("b-1", "acme", "convert", "outbound", "act-1", "web"),
        ("b-3", "acme", "applied", "inbound", "act-1", "web"),
        ("k-1", "acme", "click", "inbound", "act-1", "web"),
        ("k-2", "acme", "impression", "outbound", "act-7", "email"),
    ]


async def _history_is(settings: Settings, count: int) -> bool:
    return await history_count(settings.database_url) == count


async def test_bodies_over_the_limit_are_a_413_before_the_key_is_checked(
    make_settings, start_api
) -> None:
    settings = await make_settings(ingest_max_body_bytes=4096)
    api = await start_api(settings)
    big = b"[" + b",".join([b'{"id": "x"}'] * 1000) + b"]"

    async def chunked() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(100):
            yield b" " * 1024

    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        for path in (INTERACTIONS, "/api/v1/respond", "/api/v1/respond/bulk"):
            for headers in ({}, {"Authorization": "Bearer isk_" + "A" * 43}):
                response = await client.post(path, content=big, headers=headers)
                assert response.status_code == 413, (path, response.text)
                assert response.json()["error"]["code"] == "BODY_TOO_LARGE"
            response = await client.post(path, content=chunked())
            assert response.status_code == 413, (path, response.text)
