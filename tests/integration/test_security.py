"""Issue 14: no one in where they do not belong, against the running API.

- A body of a gigabyte is refused (413, JSON) before authentication, with the API's memory
  bounded (RSS sampled while the upload is attempted); catalog caps name the field (422).
- Rate limits per key and per client address trigger (429, Retry-After) and recover.
- A flood of unknown keys sends not one byte to Postgres (the API's connections run through
  a counting proxy).
- A read that would scan for long is cancelled at the statement timeout (503) while index
  reads stay fast; the pool never stalls.
- The API runs as a role with only its grants; it cannot TRUNCATE, write counters or run DDL.
- Migrations are checksummed: an edited applied migration is refused by `migrate` and the
  worker; an old database gets its checksums recorded in place; the API waits for `migrate`.
- Logs are JSON lines with request ids; access lines hold no query string; audit lines say who.
- /docs is served from local files under a Content-Security-Policy, or not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import select
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from api.auth import Role, create_key
from core.config import Settings
from core.db import migration_files
from core.periods import ALLTIME_START
from embedded.servers import EmbeddedServers
from tests.integration.faults import TcpProxy, _pipe, dsn_through
from tests.support import ApiProcess, run_cli, wait_until

SUMMARY = "/api/v1/interaction-summary"
GIB = 1024**3
MIB = 1024**2


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak so far) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


async def _keys(settings: Settings, *roles: tuple[Role, str]) -> list[str]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return [await create_key(pool, role, tenant) for role, tenant in roles]
    finally:
        await pool.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- bodies --------------------------------------------------------------------------------


def _upload(port: int, path: str, total: int, chunked: bool) -> dict[str, Any]:
    """Blocking, on purpose: after a failed send, asyncio's transport would stop reading too,
    while the kernel still holds the server's answer (a socket keeps what it received)."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    )
    chunk = b" " * MIB
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(framed)  # blocks while the server does not read
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection: it will not read the rest
        received = b""
        try:
            while not _complete(received):
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        except OSError:
            pass  # reset after the answer: what was received is kept
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    return {
        "status": int(lines[0].split()[1]),
        "headers": headers,
        "body": orjson.loads(body),
        "sent": sent,
    }


def _complete(received: bytes) -> bool:
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            return len(body) >= int(value)
    return False


async def upload(port: int, path: str, total: int, *, chunked: bool) -> dict[str, Any]:
    """Try to PUT ``total`` bytes without a key, stopping when the server answers; returns the
    answer and how much was sent before it."""
    return await asyncio.to_thread(_upload, port, path, total, chunked)


async def test_a_gigabyte_body_is_refused_before_authentication_with_bounded_memory(
    settings: Settings, start_api
) -> None:
    api: ApiProcess = await start_api(settings)
    assert api.pid is not None
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        # a small body without a key: 401 (the control: size is what decides below)
        small = await client.put("/api/v1/catalog", json={"channels": [{"id": "web"}]})
        assert small.status_code == 401
    before = rss_kib(api.pid)
    peak = {"rss": before["VmRSS"]}
    sampling = True

    async def sample() -> None:
        while sampling:
            peak["rss"] = max(peak["rss"], rss_kib(api.pid)["VmRSS"])  # type: ignore[arg-type]
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    try:
        declared = await upload(api.port, "/api/v1/catalog", GIB, chunked=False)
        streamed = await upload(api.port, "/api/v1/catalog", GIB, chunked=True)
    finally:
        sampling = False
        await sampler
    took = time.monotonic() - started
    after = rss_kib(api.pid)
    for name, result in (("content-length", declared), ("chunked", streamed)):
        assert result["status"] == 413, (name, result)
        assert result["body"]["error"]["code"] == "PAYLOAD_TOO_LARGE", name
        assert result["body"]["error"]["status"] == 413, name
        assert "4,194,304 bytes" in result["body"]["error"]["message"], name
        assert result["sent"] < GIB // 8, f"{name}: the server read on ({result['sent']:,} B sent)"
    grew_mib = (peak["rss"] - before["VmRSS"]) / 1024
    peak_grew_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(
        f"\nSECURITY 1 GiB upload x2 without a key: 413 after {declared['sent'] / MIB:.0f} MiB"
        f" (Content-Length) and {streamed['sent'] / MIB:.0f} MiB (chunked) sent, {took:.2f} s;"
        f" API RSS {before['VmRSS'] / 1024:.1f} MiB before, peak sampled"
        f" {peak['rss'] / 1024:.1f} MiB (+{grew_mib:.1f}), VmHWM +{peak_grew_mib:.1f} MiB"
    )
    assert grew_mib < 32 and peak_grew_mib < 32
    assert api.running


async def test_catalog_caps_name_the_field(settings: Settings, start_api) -> None:
    (editor,) = await _keys(settings, (Role.EDITOR, "default"))
    api = await start_api(settings)
    async with httpx.AsyncClient(base_url=api.url, timeout=10, headers=bearer(editor)) as client:
        long_name = await client.put(
            "/api/v1/catalog", json={"actions": [{"id": "a", "name": "n" * 501}]}
        )
        too_many = await client.put(
            "/api/v1/catalog", json={"channels": [{"id": f"c{i}"} for i in range(10_001)]}
        )
        long_ref = await client.put(
            "/api/v1/catalog", json={"treatments": [{"id": "t", "actionId": "a" * 129}]}
        )
        fits = await client.put(
            "/api/v1/catalog", json={"actions": [{"id": "a", "name": "n" * 500}]}
        )
    for response, field in (
        (long_name, "actions.0.name"),
        (too_many, "channels"),
        (long_ref, "treatments.0.actionId"),
    ):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "INVALID_PARAMETER"
        assert f"body.{field}:" in error["message"], error["message"]
    assert fits.status_code == 200, fits.text


# --- rate limits ---------------------------------------------------------------------------


async def test_rate_limits_per_key_and_per_address_trigger_and_recover(
    make_settings, start_api
) -> None:
    settings = await make_settings(
        # 3-second windows: a loaded machine may take a second for the burst below.
        api_rate_limit_per_key="5/3 seconds",
        api_rate_limit_per_producer_key="8/3 seconds",
        api_rate_limit_per_address="30/3 seconds",
        api_forwarded_allow_ips="127.0.0.1",  # so the test can speak from several addresses
    )
    first, second, producer = await _keys(
        settings, (Role.VIEWER, "default"), (Role.VIEWER, "default"), (Role.PRODUCER, "default")
    )
    api = await start_api(settings)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:

        async def get(key: str | None, address: str) -> httpx.Response:
            headers = {"X-Forwarded-For": address, **(bearer(key) if key else {})}
            return await client.get(SUMMARY, params={"days": 1}, headers=headers)

        burst = [await get(first, "10.0.0.1") for _ in range(6)]
        assert [r.status_code for r in burst] == [200] * 5 + [429]
        limited = burst[-1]
        assert limited.json()["error"]["code"] == "RATE_LIMITED"
        assert "API key" in limited.json()["error"]["message"]
        assert 1 <= int(limited.headers["retry-after"]) <= 3
        # another key from the same address has a budget of its own
        assert (await get(second, "10.0.0.1")).status_code == 200
        # a producer key has the producer budget (8), not the per-key one (5)
        posts = [
            await client.post(
                "/api/v1/interactions",
                content=b"[]",
                headers={"X-Forwarded-For": "10.0.0.4", **bearer(producer)},
            )
            for _ in range(9)
        ]
        assert [r.status_code for r in posts] == [422] * 8 + [429], [r.text for r in posts]

        async def first_key_allowed_again() -> bool:
            return (await get(first, "10.0.0.1")).status_code == 200

        recovered_after = time.monotonic()
        await wait_until(first_key_allowed_again, 10, 0.5, "the key's budget never came back")
        recovered_after = time.monotonic() - recovered_after

        # an address past its budget is refused before its key is even looked at
        flood = [await get("isk_" + "x" * 40, "10.0.0.2") for _ in range(31)]
        codes = [r.status_code for r in flood]
        assert codes[:30] == [401] * 30 and codes[30] == 429, codes
        assert "client address" in flood[-1].json()["error"]["message"]
        assert "retry-after" in flood[-1].headers
        assert (await get(second, "10.0.0.3")).status_code == 200  # other addresses unaffected
        # /health is not rate limited
        health = [
            await client.get("/health", headers={"X-Forwarded-For": "10.0.0.2"}) for _ in range(5)
        ]
        assert {r.status_code for r in health} == {200}
    print(
        f"\nSECURITY rate limits: key 5 per 3 s -> 429 at request 6, allowed again after {recovered_after:.2f} s"
    )


# --- unknown keys --------------------------------------------------------------------------


class CountingProxy(TcpProxy):
    """A TcpProxy that counts the bytes clients send to the server."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.to_server = 0

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_r, server_w = await asyncio.open_connection(*self.target)
        pair = {client_w.transport, server_w.transport}
        self._open |= pair

        async def counted() -> None:
            try:
                while data := await client_r.read(65536):
                    self.to_server += len(data)
                    server_w.write(data)
                    await server_w.drain()
            finally:
                server_w.transport.abort()

        await asyncio.gather(counted(), _pipe(server_r, client_w), return_exceptions=True)
        self._open -= pair


@pytest.fixture
async def proxied_postgres(servers: EmbeddedServers) -> AsyncIterator[CountingProxy]:
    url = httpx.URL(servers.database_url)
    proxy = CountingProxy(url.host, url.port or 5432).start()
    yield proxy
    proxy.close()


async def test_a_flood_of_unknown_keys_sends_nothing_to_postgres(
    make_settings, start_api, proxied_postgres: CountingProxy
) -> None:
    settings = await make_settings(
        api_key_cache_seconds=60, api_rate_limit_per_key="", api_rate_limit_per_address=""
    )
    (viewer,) = await _keys(settings, (Role.VIEWER, "default"))
    through = settings.model_copy(
        update={"database_url": dsn_through(settings.database_url, proxied_postgres.port)}
    )
    api = await start_api(through)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        assert (await client.get(SUMMARY, headers=bearer(viewer))).status_code == 200
        before = proxied_postgres.to_server
        started = time.monotonic()

        async def unknown(worker: int) -> list[int]:
            statuses = []
            for i in range(125):
                key = f"isk_{hashlib.sha256(f'{worker}-{i}'.encode()).hexdigest()[:43]}"
                statuses.append((await client.get(SUMMARY, headers=bearer(key))).status_code)
            return statuses

        results = await asyncio.gather(*(unknown(w) for w in range(8)))
        took = time.monotonic() - started
        flood_bytes = proxied_postgres.to_server - before
        # the control: a read that needs Postgres does go through the proxy
        rolling = await client.get(SUMMARY, params={"window": "rolling"}, headers=bearer(viewer))
        assert rolling.status_code == 200
    statuses = {s for r in results for s in r}
    assert statuses == {401}
    print(
        f"\nSECURITY 1,000 unknown keys in {took:.2f} s ({1000 / took:,.0f}/s): {flood_bytes} bytes"
        f" to Postgres; one rolling read afterwards: {proxied_postgres.to_server - before - flood_bytes} bytes"
    )
    assert flood_bytes == 0
    assert proxied_postgres.to_server > before, "the proxy sees the API's queries"


# --- bounded reads -------------------------------------------------------------------------

# 400,000 history rows of 200,000 customers over the last 400 days, and one all-time bucket:
# `window=rolling&days=36500&groupBy=customer` finds no daily bucket and aggregates the whole
# history; `days=90` (all time) is one index range of the all-time buckets.
FILL_HISTORY = """
INSERT INTO interaction_history (tenant_id, event_id, ts, customer_id, action_id, type)
SELECT 'default', 'e' || n, now() - interval '1 day' - (n % 400) * interval '1 day',
       'cust-' || n, 'act-' || (n % 50), 'impression'
FROM generate_series(1, 500000) AS n
"""
# Every row its own customer: the customer ranking over all of it takes well over the 0.25 s
# statement timeout (with 200,000 customers in 400,000 rows one read in ~6 runs finished in time).
ALLTIME_BUCKET = """
INSERT INTO interaction_bucket (tenant_id, dimension, period, bucket_start, group_id, impression, total)
VALUES ('default', 'action', 'alltime', $1, 'act-1', 3, 3)
"""


async def test_a_pathological_read_is_cut_at_the_timeout_while_normal_reads_stay_fast(
    make_settings, start_api
) -> None:
    settings = await make_settings(
        api_statement_timeout_seconds=0.25,
        api_pool_acquire_timeout_seconds=1.0,
        api_rate_limit_per_key="",
    )
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(FILL_HISTORY)
        await conn.execute(
            ALLTIME_BUCKET, ALLTIME_START
        )  # asyncpg's date.min, as the worker writes it
        await conn.execute("ANALYZE interaction_history")
    finally:
        await conn.close()
    (viewer,) = await _keys(settings, (Role.VIEWER, "default"))
    api = await start_api(settings)
    pathological = {"window": "rolling", "days": 36500, "groupBy": "customer"}
    async with httpx.AsyncClient(base_url=api.url, timeout=30, headers=bearer(viewer)) as client:
        warm = await client.get(SUMMARY, params={"days": 90})
        assert (warm.status_code, warm.json()["source"]) == (200, "postgres")

        async def timed(params: dict[str, Any]) -> tuple[float, httpx.Response]:
            began = time.monotonic()
            response = await client.get(SUMMARY, params=params)
            return time.monotonic() - began, response

        async def normal_reads() -> list[tuple[float, httpx.Response]]:
            done = []
            for _ in range(20):
                done.append(await timed({"days": 90}))
            return done

        heavy, normal = await asyncio.gather(
            asyncio.gather(*(timed(pathological) for _ in range(12))), normal_reads()
        )
    heavy_codes = sorted(
        {r.json().get("error", {}).get("code", str(r.status_code)) for _, r in heavy}
    )
    assert {r.status_code for _, r in heavy} == {503}, heavy_codes
    assert "QUERY_TIMEOUT" in heavy_codes and set(heavy_codes) <= {"QUERY_TIMEOUT", "SERVER_BUSY"}
    slowest_heavy = max(t for t, _ in heavy)
    assert slowest_heavy < 0.25 * 3 + 1.0 + 2.0, "bounded by statement timeout and acquire wait"
    assert {r.status_code for _, r in normal} == {200}
    slowest_normal = max(t for t, _ in normal)
    print(
        f"\nSECURITY 12 pathological reads at once: 503 {heavy_codes} within {slowest_heavy:.2f} s;"
        f" 20 index reads meanwhile: all 200, slowest {slowest_normal * 1000:.0f} ms"
    )
    assert slowest_normal < 0.5


# --- the API's database role ---------------------------------------------------------------


async def test_the_api_runs_as_a_role_that_cannot_change_schema_or_counters(
    settings: Settings, as_api_role, start_api
) -> None:
    (admin,) = await _keys(settings, (Role.ADMIN, "default"))
    restricted = await as_api_role(settings)
    api = await start_api(restricted)
    async with httpx.AsyncClient(base_url=api.url, timeout=10, headers=bearer(admin)) as client:
        for params in ({"days": 1}, {"days": 7, "window": "rolling"}, {"days": 90}):
            response = await client.get(SUMMARY, params=params)
            assert response.status_code == 200, (params, response.text)
        assert (await client.get("/api/v1/interaction-timeseries")).status_code == 200
        loaded = await client.put("/api/v1/catalog", json={"channels": [{"id": "web"}]})
        assert loaded.status_code == 200, loaded.text
        made = await client.post("/api/v1/keys", json={"role": "viewer"})
        assert made.status_code == 201, made.text
        revoked = await client.delete(f"/api/v1/keys/{made.json()['key'][:10]}")
        assert revoked.json() == {"revoked": 1}
        new_type = {"key": "applied", "name": "Applied", "classification": "positive"}
        registered = await client.post("/api/v1/outcome-types", json=new_type)
        assert registered.status_code == 201, registered.text
        changed = await client.put("/api/v1/outcome-types/applied", json={"ordinal": 7})
        assert changed.status_code == 200, changed.text
        assert (await client.delete("/api/v1/outcome-types/applied")).status_code == 200
        assert (await client.get("/api/v1/outcome-types")).status_code == 200
    conn = await asyncpg.connect(restricted.database_url)
    try:
        for statement in (
            "TRUNCATE interaction_bucket",
            "DELETE FROM interaction_history",
            "INSERT INTO interaction_bucket (tenant_id, dimension, period, bucket_start, group_id)"
            " VALUES ('default', 'action', 'daily', '2026-01-01', 'x')",
            "UPDATE interaction_bucket SET total = 0",
            "CREATE TABLE intruder (id int)",
            "DROP TABLE catalog_channel",
            "ALTER TABLE api_key ADD COLUMN backdoor text",
            "DELETE FROM api_key",
            "DELETE FROM outcome_type",
            "UPDATE interaction_bucket_outcome SET count = 0",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


# --- migrations ----------------------------------------------------------------------------


async def test_an_edited_applied_migration_is_refused_by_migrate_and_the_worker(
    settings: Settings,
) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        recorded = {
            r["name"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")
        }
        shipped = {
            name: hashlib.sha256(sql.encode()).hexdigest() for _, name, sql in migration_files()
        }
        assert recorded == shipped
        await conn.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = 1", "0" * 64)
    finally:
        await conn.close()
    migrate = await run_cli(settings, "migrate")
    assert migrate.returncode == 1
    assert "0001_initial.sql" in migrate.stderr and "must never be edited" in migrate.stderr
    worker = await run_cli(settings, "worker", timeout=60)
    assert worker.returncode == 1
    assert "must never be edited" in worker.stderr


async def test_a_database_from_before_checksums_is_upgraded_in_place(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("ALTER TABLE schema_migrations DROP COLUMN checksum")
        result = await run_cli(settings, "migrate")
        assert result.returncode == 0, result.stderr
        assert "0 migration(s) applied" in result.stderr
        recorded = {
            r["name"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")
        }
    finally:
        await conn.close()
    shipped = {name: hashlib.sha256(sql.encode()).hexdigest() for _, name, sql in migration_files()}
    assert recorded == shipped


async def test_the_api_never_migrates_and_waits_for_migrate(
    empty_database: str, settings: Settings, start_api
) -> None:
    fresh = settings.model_copy(update={"database_url": empty_database})
    api = await start_api(fresh)
    await api.wait_for_log("run `interaction-summary migrate`", timeout=20)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        ready = (await client.get("/ready")).json()
        assert ready["checks"]["postgres"] == "not connected"
        conn = await asyncpg.connect(fresh.database_url)
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await conn.close()
        assert tables == 0, "the API created tables"
        result = await run_cli(fresh, "migrate")
        assert result.returncode == 0, result.stderr

        async def connected() -> bool:
            body = (await client.get("/ready")).json()
            return bool(body["checks"]["postgres"] == "ok")

        await wait_until(connected, 30, 0.2, "the API never connected after migrate")
    api.stop()


# --- logs and docs -------------------------------------------------------------------------


async def test_logs_are_json_lines_with_request_ids_access_and_audit(
    settings: Settings, start_api
) -> None:
    (admin,) = await _keys(settings, (Role.ADMIN, "default"))
    api = await start_api(settings)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        read = await client.get(
            SUMMARY, params={"days": 1, "token": "secret-in-query"}, headers=bearer(admin)
        )
        made = await client.post(
            "/api/v1/keys",
            json={"role": "viewer"},
            headers={**bearer(admin), "X-Request-Id": "req-42"},
        )
        new_key = made.json()["key"]
        await client.delete(
            f"/api/v1/keys/{new_key}", headers=bearer(admin)
        )  # the full key in the path
    assert made.headers["x-request-id"] == "req-42"

    def records() -> list[dict[str, Any]]:
        lines = [x for x in api.logs().rsplit("===== start #", 1)[-1].splitlines()[1:] if x.strip()]
        return [orjson.loads(line) for line in lines]  # every line is one JSON object

    await wait_until(lambda: any(r.get("action") == "key.revoke" for r in records()), 10)
    logged = records()
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in logged)
    access = [r for r in logged if r["logger"] == "api.access"]
    summary_line = next(r for r in access if r["path"] == SUMMARY)
    assert summary_line["request_id"] == read.headers["x-request-id"]
    assert (summary_line["status"], summary_line["role"]) == (200, "admin")
    assert summary_line["key_prefix"] == admin[:10]
    audit = {r["action"]: r for r in logged if r.get("audit")}
    assert audit["key.create"]["request_id"] == "req-42"
    assert audit["key.create"]["actor"] == {
        "key_prefix": admin[:10],
        "role": "admin",
        "tenant": "default",
    }
    assert audit["key.create"]["key_prefix"] == new_key[:10]
    assert audit["key.revoke"]["revoked"] == 1
    text = api.logs()
    assert "secret-in-query" not in text
    assert admin not in text and new_key not in text


async def test_docs_load_nothing_from_elsewhere_or_are_off(make_settings, start_api) -> None:
    api = await start_api(await make_settings())
    off = await start_api(await make_settings(api_docs=False), name="api-no-docs")
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "://" not in page.text, "an absolute URL: something loaded from elsewhere"
        assert 'src="/docs/swagger-ui-bundle.js"' in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self' 'sha256-" in policy and "default-src 'none'" in policy
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
            assert (await client.get(f"/docs/{asset}")).status_code == 200, asset
        assert (await client.get("/docs/../main.py")).status_code == 404
        assert (await client.get("/docs/oauth2-redirect.html")).status_code == 404
    async with httpx.AsyncClient(base_url=off.url, timeout=10) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 200
