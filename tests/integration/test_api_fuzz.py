"""Issue 5: the API under hostile requests.

- schemathesis generates requests from the API's own OpenAPI document (``/openapi.json`` of
  the running API): schema-valid and schema-violating ones, with garbage credentials and with
  a valid admin key. No response may be a 5xx; every error is the JSON error body.
- SQL injection and absurd sizes in every place a request can carry them: rejected, or
  stored and shown back as plain data; the tables are intact afterwards.
- The role matrix over every protected operation of the document: no key, malformed key,
  unknown key, revoked key, too low a role, another tenant: 401 or 403, every time.
- Keys are stored only as SHA-256 hashes, and no key appears in any service log.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.config import Settings
from tests.integration.credentials import Keys, assert_no_secret_in_logs, make_keys
from tests.integration.publishing import Publisher
from tests.integration.stores import wait_for_exact_stores
from tests.integration.traffic import make_traffic
from tests.recount import distinct_events, expected_buckets
from tests.support import ApiProcess, grant_erasure, wait_until

# Generated requests per operation, generation mode and credentials; CI runs the default.
API_EXAMPLES = int(os.environ.get("RELIABILITY_API_EXAMPLES", "30"))

SUMMARY = "/api/v1/interaction-summary"
# Who may call each protected operation of the document. A new operation fails the role
# matrix until it is added here: nothing protected goes untested.
REQUIRED_ROLE = {
    ("GET", "/api/v1/interaction-summary"): "viewer",
    ("GET", "/api/v1/interaction-timeseries"): "viewer",
    ("PUT", "/api/v1/catalog"): "editor",
    ("POST", "/api/v1/keys"): "admin",
    ("DELETE", "/api/v1/keys/{key_prefix}"): "admin",
    ("POST", "/api/v1/interactions"): "producer",
    ("POST", "/api/v1/respond"): "producer",
    ("POST", "/api/v1/respond/bulk"): "producer",
    ("GET", "/api/v1/interaction-summaries"): "viewer",
    ("GET", "/api/v1/interaction-history"): "viewer",
    ("DELETE", "/api/v1/customers/{customerId}"): "admin",
    ("GET", "/api/v1/outcome-types"): "viewer",
    ("POST", "/api/v1/outcome-types"): "editor",
    ("PUT", "/api/v1/outcome-types/{type_key}"): "editor",
    ("DELETE", "/api/v1/outcome-types/{type_key}"): "editor",
}
# The roles each requirement lets through: viewer < editor < admin is a chain; a producer key
# may only ingest, which editors and admins may too.
ALLOWED = {
    "viewer": {"viewer", "editor", "admin"},
    "editor": {"editor", "admin"},
    "admin": {"admin"},
    "producer": {"producer", "editor", "admin"},
}
PUBLIC = {("GET", "/health"), ("GET", "/ready")}
_ERROR_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass
class Target:
    url: str
    keys: Keys
    settings: Settings
    api: ApiProcess


@pytest.fixture
async def target(settings: Settings, start_worker, start_api, as_api_role) -> AsyncIterator[Target]:
    """An API over counted events (Redis and Postgres both populated), with keys of each role.

    The API runs as a role with only the API's grants (core.roles), as in production."""
    traffic = make_traffic(600, seed=71)
    start_worker(settings)
    api = await start_api(await as_api_role(settings))
    keys = await make_keys(settings.database_url)
    async with Publisher(settings) as publisher:
        await publisher.send(traffic.messages)
    events = distinct_events(traffic.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    yield Target(api.url, keys, settings, api)


def _content_type(response: Any) -> str:
    """httpx gives a header as a string; schemathesis as a list of values."""
    value = response.headers.get("content-type", "")
    return str(value[0] if isinstance(value, list) else value)


def assert_well_formed(response: Any, where: str) -> None:
    """No 5xx; every error is ``{"error": {"code", "message", "status"}}`` in JSON."""
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    if response.status_code >= 400:
        assert _content_type(response).startswith("application/json"), where
        error = response.json()["error"]
        assert _ERROR_CODE.match(error["code"]), where
        assert isinstance(error["message"], str) and error["message"], where
        assert error["status"] == response.status_code, where
        assert "Traceback" not in response.text, where


# --- schemathesis --------------------------------------------------------------------------


FUZZ_SETTINGS = hypothesis_settings(
    max_examples=API_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests every run: CI must not be flaky
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(target: Target, cases: Counter[str]) -> None:
    """Every operation x (valid, invalid data) x (generated credentials, admin key); in a thread."""
    schema = schemathesis.openapi.from_url(f"{target.url}/openapi.json")
    admin = {"authorization": f"Bearer {target.keys['admin']}", "x-tenant-id": "default"}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                continue  # nothing to make invalid (/health, /ready)
            for credentials, headers in (("generated", None), ("admin", admin)):
                label = f"{operation.method.upper()} {operation.path} {mode.value} {credentials}"
                _fuzz_one(target, operation.as_strategy(mode, headers=headers), label, cases)


def _has_inputs(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


def _fuzz_one(target: Target, strategy: Any, label: str, cases: Counter[str]) -> None:
    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=target.url, timeout=30)
        cases["requests"] += 1
        cases[f"{response.status_code // 100}xx"] += 1
        where = (
            f"{label}: {case.method} {case.formatted_path} {case.query} -> {response.status_code}"
        )
        assert_well_formed(response, where)
        case.validate_response(response, checks=CHECKS)

    run()


async def test_generated_requests_never_get_a_5xx_and_every_error_is_json(target: Target) -> None:
    cases: Counter[str] = Counter()
    await asyncio.to_thread(_fuzz, target, cases)
    print(f"\nRELIABILITY api fuzz: {dict(sorted(cases.items()))}")
    assert cases["requests"] >= 10 * 2 * 2 * min(API_EXAMPLES, 5)
    assert cases["2xx"] > 0, "the admin key got requests through to the handlers"
    assert target.api.running


# --- injection and absurd sizes ------------------------------------------------------------

INJECTION = "x'; DROP TABLE interaction_bucket; --"
# (params, expected status, check of the body)
HOSTILE_QUERIES: list[tuple[dict[str, Any], int, Any]] = [
    ({"groupBy": INJECTION}, 422, None),
    ({"groupBy": "action' OR '1'='1"}, 422, None),
    ({"days": "1; DELETE FROM api_key"}, 422, None),
    ({"days": "1 OR 1=1"}, 422, None),
    ({"limit": "1) UNION SELECT key_hash FROM api_key --"}, 422, None),
    ({"window": INJECTION}, 422, None),
    ({"offset": "0; SELECT pg_sleep(10)"}, 422, None),
    ({"days": 10**100}, 422, None),
    ({"offset": 10**30}, 422, None),
    ({"limit": "9" * 5000}, 422, None),
    ({"groupBy": "a" * 60_000}, 422, None),  # near the longest URL a client sends (64 KiB)
    ({"limit": 10**100}, 200, lambda b: b["limit"] == 500),  # capped, as the contract says
    ({INJECTION: INJECTION}, 200, lambda b: b["groupBy"] == "action"),  # unknown: ignored
]


async def test_injection_and_absurd_sizes_are_rejected_or_stored_as_plain_data(
    target: Target,
) -> None:
    viewer = {"Authorization": f"Bearer {target.keys['viewer:default']}"}
    admin = {"Authorization": f"Bearer {target.keys['admin']}"}
    async with httpx.AsyncClient(base_url=target.url, timeout=30) as client:
        before = (await client.get(SUMMARY, params={"days": 90}, headers=viewer)).json()
        for params, status, check in HOSTILE_QUERIES:
            response = await client.get(SUMMARY, params=params, headers=viewer)
            assert response.status_code == status, (params, response.text[:300])
            assert_well_formed(response, str(params)[:100])
            if check:
                assert check(response.json()), params

        for headers in (
            {"X-Tenant-Id": INJECTION, **viewer},
            {"X-Tenant-Id": "t" * 10_000, **viewer},
            {"Authorization": f"Bearer {INJECTION}"},
            {"Authorization": "Bearer isk_' OR '1'='1' --" + "x" * 20},
            {"X-API-Key": "isk_" + "x" * 20 + "' OR 1=1 --"},
        ):
            response = await client.get(SUMMARY, headers=headers)
            assert response.status_code in (401, 403), headers
            assert_well_formed(response, str(headers)[:100])

        revoked = await client.delete(f"/api/v1/keys/{INJECTION}", headers=admin)
        assert (revoked.status_code, revoked.json()) == (200, {"revoked": 0})
        for body in (
            {"actions": [{"id": "a" * 129}]},
            {"actions": [{"id": "act-01", "priority": 2**40}]},
            {"actions": [{"id": "act-01", "name": "nul\x00byte"}]},
            {"actions": [{"id": "act-01"}, {"id": "act-01"}]},
            {"actions": [{"id": "act-01"}], "unknown": INJECTION},
        ):
            response = await client.put("/api/v1/catalog", json=body, headers=admin)
            assert response.status_code == 422, (body, response.text[:300])
            assert_well_formed(response, str(body)[:100])
        for body in ({"role": "viewer", "label": "l" * 201}, {"role": INJECTION}):
            response = await client.post("/api/v1/keys", json=body, headers=admin)
            assert response.status_code == 422, body

        # Stored as data: the catalog name comes back verbatim next to the counted action
        # (this API answered before any catalog existed: the first load must still show).
        stored = await client.put(
            "/api/v1/catalog",
            json={"actions": [{"id": "act-01", "name": INJECTION, "group": "{}:*?[]"}]},
            headers=admin,
        )
        assert stored.status_code == 200, stored.text

        async def shown() -> bool:
            body = (await client.get(SUMMARY, params={"days": 90}, headers=viewer)).json()
            row = next(r for r in body["summary"] if r["id"] == "act-01")
            return row["name"] == INJECTION and row["group"] == "{}:*?[]"

        await wait_until(shown, 10, 0.2, "the catalog name never showed")
        after = (await client.get(SUMMARY, params={"days": 90}, headers=viewer)).json()

    def counters(body: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(r["id"], r["total"], r["impression"], r["click"]) for r in body["summary"]]

    assert counters(after) == counters(before), "the counters are untouched"
    conn = await asyncpg.connect(target.settings.database_url)
    try:
        tables = {
            r[0]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {"interaction_bucket", "interaction_history", "api_key", "catalog_action"} <= tables
        assert await conn.fetchval("SELECT count(*) FROM api_key WHERE revoked_at IS NULL") >= 4
    finally:
        await conn.close()


# --- the role matrix -----------------------------------------------------------------------

ROLES = ("producer", "viewer", "editor", "admin")
_EVENT = {"id": "ev-m", "timestamp": 0, "customerId": "C", "actionId": "A", "type": "click"}
_OUTCOME = {"customerId": "C", "offerId": "A", "outcome": "click", "idempotencyKey": "o-m"}


@dataclass
class Bare:
    url: str
    keys: Keys
    settings: Settings
    api: ApiProcess


@pytest.fixture
async def bare(settings: Settings, start_api, as_api_role) -> Bare:
    """An API (as the API's database role) and keys of every role; no events needed to check
    who may do what."""
    keys = await make_keys(settings.database_url, ("default", "acme"))
    restricted = await as_api_role(settings)
    await grant_erasure(settings, restricted)  # so the role matrix covers DELETE customers
    # The matrix sends hundreds of requests from one address within seconds; the budgets are
    # test_security.py's to check.
    unlimited = restricted.model_copy(
        update={"api_rate_limit_per_key": "", "api_rate_limit_per_address": ""}
    )
    api = await start_api(unlimited)
    return Bare(api.url, keys, settings, api)


_NEW_TYPES = itertools.count()
# The custom types the matrix changes and deletes (made before it runs).
_MATRIX_TYPES = {"PUT": "m_put", "DELETE": "m_delete"}


def _request_for(method: str, path: str) -> dict[str, Any]:
    """A well-formed request of the operation, so only the credentials decide."""
    if path == "/api/v1/outcome-types" and method == "POST":
        key = f"m_{next(_NEW_TYPES)}"  # each a new key: a second POST of one would be 409
        return {"json": {"key": key, "name": "M", "classification": "positive"}}
    if path == "/api/v1/outcome-types/{type_key}" and method == "PUT":
        return {"json": {"classification": "negative"}}
    if path == "/api/v1/catalog":
        return {"json": {"channels": [{"id": "web", "name": "Website"}]}}
    if path == "/api/v1/keys":
        return {"json": {"role": "viewer"}}
    if path == "/api/v1/interactions":
        return {"json": [_EVENT]}
    if path == "/api/v1/respond":
        return {"json": _OUTCOME}
    if path == "/api/v1/respond/bulk":
        return {"json": {"outcomes": [_OUTCOME]}}
    if path in ("/api/v1/interaction-summaries", "/api/v1/interaction-history"):
        return {"params": {"customerId": "C-001"}}
    return {}


async def test_every_protected_operation_refuses_missing_bad_revoked_and_weak_keys(
    bare: Bare,
) -> None:
    keys = bare.keys
    async with httpx.AsyncClient(base_url=bare.url, timeout=10) as client:
        document = (await client.get("/openapi.json")).json()
        operations = {
            (method.upper(), path) for path, ops in document["paths"].items() for method in ops
        }
        protected = operations - PUBLIC
        assert protected == set(REQUIRED_ROLE), "every operation has a required role here"
        unknown = "isk_" + "A" * 43  # well formed, never issued
        refused = {
            "no key": ({}, 401),
            "bearer without key": ({"Authorization": "Bearer"}, 401),
            "basic auth": ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
            "malformed": ({"Authorization": "Bearer not-a-key"}, 401),
            "too short": ({"Authorization": "Bearer isk_abc"}, 401),
            "unknown": ({"Authorization": f"Bearer {unknown}"}, 401),
            "unknown x-api-key": ({"X-API-Key": unknown}, 401),
            "revoked": ({"Authorization": f"Bearer {keys['revoked']}"}, 401),
            "revoked x-api-key": ({"X-API-Key": keys["revoked"]}, 401),
            "other tenant": (
                {"Authorization": f"Bearer {keys['admin']}", "X-Tenant-Id": "acme"},
                403,
            ),
        }
        for key_name in _MATRIX_TYPES.values():
            made_type = await client.post(
                "/api/v1/outcome-types",
                json={"key": key_name, "name": "M", "classification": "neutral"},
                headers={"Authorization": f"Bearer {keys['admin']}"},
            )
            assert made_type.status_code == 201, made_type.text
        tried = 0
        for method, path in sorted(protected):
            url = path.replace("{key_prefix}", "isk_nothing").replace("{customerId}", "C-001")
            url = url.replace("{type_key}", _MATRIX_TYPES.get(method, "m_none"))
            allowed = ALLOWED[REQUIRED_ROLE[(method, path)]]
            cases = dict(refused)
            for role in ROLES:
                key = keys[role] if role != "viewer" else keys["viewer:default"]
                cases[role] = (
                    {"Authorization": f"Bearer {key}"},
                    None if role in allowed else 403,
                )
            for name, (headers, status) in cases.items():
                response = await client.request(
                    method, url, headers=headers, **_request_for(method, path)
                )
                tried += 1
                where = f"{method} {path} with {name}: {response.status_code}"
                assert_well_formed(response, where)
                if status is None:
                    assert response.status_code < 400, where
                else:
                    assert response.status_code == status, where
                    if status == 401:
                        assert response.headers["www-authenticate"] == "Bearer", where

        # a key revoked through the API stops working within the key cache's lifetime
        made = await client.post(
            "/api/v1/keys",
            json={"role": "editor"},
            headers={"Authorization": f"Bearer {keys['admin']}"},
        )
        editor = made.json()["key"]
        assert (
            await client.get(SUMMARY, headers={"Authorization": f"Bearer {editor}"})
        ).status_code == 200
        gone = await client.delete(
            f"/api/v1/keys/{editor[:10]}", headers={"Authorization": f"Bearer {keys['admin']}"}
        )
        assert gone.json() == {"revoked": 1}

        async def refused_now() -> bool:
            response = await client.get(SUMMARY, headers={"Authorization": f"Bearer {editor}"})
            return response.status_code == 401

        await wait_until(refused_now, bare.settings.api_key_cache_seconds + 5, 0.2)
    print(f"\nRELIABILITY role matrix: {len(protected)} operations, {tried} requests")

    clear = [*keys.values(), editor]
    conn = await asyncpg.connect(bare.settings.database_url)
    try:
        stored = {r["key_hash"]: r for r in await conn.fetch("SELECT * FROM api_key")}
        for key in clear:
            row = stored[hashlib.sha256(key.encode()).hexdigest()]
            assert row["key_prefix"] == key[:10]
        tables = [
            r[0]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        for table in tables:
            dump = "\n".join(r[0] for r in await conn.fetch(f'SELECT t::text FROM "{table}" AS t'))
            for key in clear:
                assert key not in dump, f"a key in clear in table {table}"
    finally:
        await conn.close()
    assert_no_secret_in_logs(bare.api.log_path.parent, clear)
