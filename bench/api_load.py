"""Figures 3 and 5b: the summary API under polling load, and the API's peak memory.

``python -m bench.api_load [--rows 1000000] [--seconds 20] [--smoke]``

Data: the current month holds ``--rows`` synthetic interactions (``bench.history``: the
synthetic catalog and distributions, with every one of the 1,000 actions and 200,000
customers at least once), counted into Postgres buckets by ``streams.rebuild``, and Redis
filled from Postgres by the worker's own resync (``RedisSink.resync``), as after a Redis
restart. So the API answers from Redis, as it does for every current period.

Load (``bench.loadgen``: ``wrk`` if installed, else a Python client; the results say which):
100 connections, one ``wrk`` thread, each connection polling the four ``groupBy`` values in
turn (``days=30``, so the month; default page of 100), with a viewer key.

1. Saturation, no pause between requests: requests/s, p50, p99. The ceiling is ``GET /health``
   on the same server with the same tool and connections, measured right after.
2. Dashboard polling: the same 100 clients, each pausing ``--pause-ms`` (500) after every
   answer, as 100 dashboards refreshing their four groupings every 2 seconds would: p50 and
   p99 there are the latency a dashboard sees. (At saturation every request waits behind the
   other 99 connections' requests: by Little's law the mean latency is 100 / throughput, so
   saturated percentiles measure the queue, not the request.) Its ceiling: ``GET /health``
   polled the same way, which shows what the machine's scheduling alone adds to a request.

On this 2-core machine the load generator, Redis and the API (one uvicorn process) share the
CPUs: wrk takes part of a core away from the API. Peak RSS of the API (Linux ``VmHWM``) after
all runs is figure 5b. ``--profile`` records the API with py-spy during the saturation run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from bench import history, loadgen, services
from bench.report import (
    RESULTS_DIR,
    Figure,
    Report,
    Target,
    cpu_seconds,
    make_console,
    peak_rss_mb,
)
from cli.synthetic import make_catalog
from core.periods import Period, bucket_start
from embedded.processes import Process
from streams.rebuild import rebuild_postgres
from streams.redis_sink import RedisSink

GROUPINGS = ("action", "treatment", "channel", "customer")
CONNECTIONS = 100
TARGET_P99_MS = 25.0
TARGET_RATIO = 0.5
TARGET_RSS_MB = 150.0
# A dashboard client's pause after each answer in the polling run.
PAUSE_MS = 500.0

console = make_console()


async def _prepare(settings: Any, rows: int, catalog: Any) -> dict[str, Any]:
    """History of the month so far, its buckets in Postgres (the rebuild), Redis resynced."""
    now = datetime.now(UTC)
    month = bucket_start(Period.MONTHLY, now.date())
    start = datetime(month.year, month.month, month.day, tzinfo=UTC)
    conn = await asyncpg.connect(settings.database_url)
    try:
        seconds = await history.generate(conn, catalog, rows, start, now, cover=True)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    redis = Redis.from_url(settings.redis_url)
    try:
        await rebuild_postgres(pool)
        counted = await pool.fetch(
            "SELECT dimension, count(DISTINCT group_id) AS n FROM interaction_bucket"
            " WHERE period = 'daily' AND bucket_start >= $1 GROUP BY dimension",
            month,
        )
        if not await RedisSink(redis, settings.redis_prefix).resync(pool):
            raise RuntimeError("another process holds the resync lock")
    finally:
        await redis.aclose()
        await pool.close()
    groups = {r["dimension"]: r["n"] for r in counted}
    return {"history_seconds": round(seconds, 1), "groups_in_month": groups}


def _paths() -> list[str]:
    return [f"/api/v1/interaction-summary?groupBy={g}&days=30" for g in GROUPINGS]


async def _check_answers(url: str, auth: str, paths: list[str]) -> dict[str, Any]:
    """Every URL answers 200 from Redis; returns the group count and body size of each."""
    seen = {}
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": auth}) as client:
        for path in paths:
            response = await client.get(path)
            response.raise_for_status()
            body = response.json()
            if body["source"] != "redis":
                raise RuntimeError(f"{path} answered from {body['source']}, not redis")
            seen[body["groupBy"]] = {"groups": body["total"], "bytes": len(response.content)}
    return seen


def _profile(pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        console.print("[yellow]py-spy not found: no profile[/]")
        return None
    out = RESULTS_DIR / "profiles" / "api_load.collapsed.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--format", "raw", "--output", str(out), "--rate", "200", "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run(
    rows: int,
    customers: int,
    seconds: float,
    pause_ms: float,
    tool: str,
    profile: bool,
    smoke: bool,
) -> Report:
    report = Report("api_load", smoke)
    report.parameters = {
        "rows_in_month": rows,
        "customers": customers,
        "connections": CONNECTIONS,
        "seconds_per_run": seconds,
        "urls": _paths(),
        "polling_pause_ms": pause_ms,
    }
    catalog = make_catalog(0, customers=customers)
    with tempfile.TemporaryDirectory(prefix="is-bench-api-") as tmp:
        work = Path(tmp)
        with services.servers(kafka=False, state_dir=work / "servers") as srv:
            report.servers = services.describe(srv)
            async with services.fresh_settings(srv, "api", work, topics=False) as settings:
                report.servers.update(
                    await services.server_versions(settings.database_url, settings.redis_url)
                )
                key = await services.catalog_and_key(settings, catalog)
                with console.status(f"{rows:,} interactions into the month's buckets and Redis"):
                    report.details["data"] = await _prepare(settings, rows, catalog)
                async with services.api(settings, work / "logs") as api:
                    auth = f"Bearer {key}"
                    paths = _paths()
                    report.details["answers"] = await _check_answers(api.url, auth, paths)
                    report.details["rss_mb_before_load"] = round(
                        peak_rss_mb(services.pid_of(api)), 1
                    )
                    redis = services.server_pids(srv)["redis"]
                    await _measure(
                        report, api, redis, auth, paths, seconds, pause_ms, tool, profile
                    )
                    report.details["api_peak_rss_mb"] = round(peak_rss_mb(services.pid_of(api)), 1)
    rss = report.details["api_peak_rss_mb"]
    report.add(Figure("API peak RSS (5b)", rss, "MB", targets=(Target("<", TARGET_RSS_MB),)))
    return report


async def _measure(
    report: Report,
    api: Process,
    redis: list[int],
    auth: str,
    paths: list[str],
    seconds: float,
    pause_ms: float,
    tool: str,
    profile: bool,
) -> None:
    cpu: dict[str, dict[str, float]] = {}

    def used() -> dict[str, float]:
        return {
            "api": cpu_seconds(services.pid_of(api)),
            "redis": sum(cpu_seconds(p) for p in redis),
        }

    async def load(what: str, urls: list[str], delay_ms: float = 0.0) -> loadgen.Load:
        before = used()
        with console.status(f"{what}: {CONNECTIONS} connections, {seconds:.0f}s"):
            result = await loadgen.run(
                api.url, urls, auth, connections=CONNECTIONS, seconds=seconds,
                delay_ms=delay_ms, tool=tool,
            )  # fmt: skip
        if result.errors or result.non_2xx:
            raise RuntimeError(f"{what}: {result.errors} errors, {result.non_2xx} non-2xx")
        after = used()
        cpu[what] = {
            f"{name}_cpu_us_per_request": round(1e6 * (after[name] - before[name]) / result.requests, 1)
            for name in after
        } if result.requests else {}  # fmt: skip
        return result

    await loadgen.run(api.url, paths, auth, connections=CONNECTIONS, seconds=3, tool=tool)
    spy = _profile(services.pid_of(api), seconds) if profile else None
    summary = await load("summary, saturated", paths)
    if spy is not None:
        spy.wait()
    health = await load("health, saturated", ["/health"])
    delay_ms = pause_ms
    polling = await load("summary, dashboard polling", paths, delay_ms)
    health_polling = await load("health, dashboard polling", ["/health"], delay_ms)
    report.details["load"] = {
        "tool": summary.tool,
        "summary_saturated": {**summary.as_json(), **cpu["summary, saturated"]},
        "health_saturated": {**health.as_json(), **cpu["health, saturated"]},
        "summary_polling": {**polling.as_json(), "delay_ms_per_client": round(delay_ms, 1)},
        "health_polling": health_polling.as_json(),
    }
    ceiling = f"GET /health, {health.tool}"
    report.add(
        Figure(
            "requests/s, saturated",
            summary.rate,
            "req/s",
            health.rate,
            ceiling,
            (Target(">=", TARGET_RATIO, of="ratio"),),
            note=f"{CONNECTIONS} connections, 4 groupBy in turn; CPU per request: API"
            f" {cpu['summary, saturated'].get('api_cpu_us_per_request')} µs (/health"
            f" {cpu['health, saturated'].get('api_cpu_us_per_request')} µs), Redis"
            f" {cpu['summary, saturated'].get('redis_cpu_us_per_request')} µs",
        )
    )
    for name, value, ceiling_value in (
        ("p50, saturated", summary.p50_ms, health.p50_ms),
        ("p99, saturated", summary.p99_ms, health.p99_ms),
    ):
        targets = (Target("<", TARGET_P99_MS),) if name.startswith("p99") else ()
        report.add(Figure(name, value, "ms", ceiling_value, ceiling, targets))
    offered = f"{polling.rate:,.0f} req/s: each client pauses {delay_ms:.0f} ms after an answer"
    polled = "GET /health, same pauses"
    report.add(
        Figure(
            "p50, dashboard polling",
            polling.p50_ms,
            "ms",
            health_polling.p50_ms,
            polled,
            note=offered,
        )
    )
    report.add(
        Figure(
            "p99, dashboard polling",
            polling.p99_ms,
            "ms",
            health_polling.p99_ms,
            polled,
            (Target("<", TARGET_P99_MS),),
            note=offered,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_load", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="interactions in the month")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each load run")
    parser.add_argument("--pause-ms", type=float, default=PAUSE_MS, help="polling clients' pause")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--profile", action="store_true", help="py-spy the API (collapsed stacks)")
    parser.add_argument("--output", type=Path, help="results file (default: bench/results/)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, short runs, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.customers, args.seconds = 20_000, 5_000, 2.0
    options = (args.seconds, args.pause_ms, args.tool, args.profile, args.smoke)
    report = asyncio.run(run(args.rows, args.customers, *options))
    path = report.write(args.output)
    report.show(console, path)


if __name__ == "__main__":
    main()
