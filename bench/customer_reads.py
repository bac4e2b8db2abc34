"""Per-customer reads under load (issue 12): what a contact policy asks about one customer.

``python -m bench.customer_reads [--rows 6000000] [--customers 200000] [--seconds 20] [--smoke]``

Data: ``--rows`` interactions over the last 30 days (``bench.history``: the synthetic catalog,
Zipf-like customers, every customer at least once) written straight into the history table
with its indexes (migration 0006's per-customer index included).

Load (``bench.loadgen``: ``wrk`` if installed, else the Python client; the results say which):
100 connections, each requesting random customers (uniform over all of them, from a list of
``--urls`` drawn once) in turn, with a viewer key:

1. ``GET /api/v1/interaction-summaries?customerId=...`` (every period type), saturated;
2. ``GET /health`` on the same server with the same tool and connections: the ceiling;
3. ``GET /api/v1/interaction-history?customerId=...`` (the first page of 50), saturated;
4. the same three paced: each client pauses ``PAUSE_MS`` after every answer, so the p99 is
   the latency of a request, not of the queue of 99 others in front of it.

Targets (issue 12): summaries p99 < 5 ms and >= 0.5x the /health rate; history p99 < 20 ms.
Saturated percentiles include the queue behind the other 99 connections (Little's law), so
each run also reports the API's and Postgres's CPU per request (utime + stime from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import history, loadgen, services
from bench.report import Figure, Report, Target, cpu_seconds, make_console
from cli.synthetic import make_catalog

CONNECTIONS = 100
SUMMARY_P99_MS = 5.0
HISTORY_P99_MS = 20.0
TARGET_RATIO = 0.5
# A client's pause after each answer in the paced runs: 100 clients then offer ~200 req/s,
# a load the API sustains, so percentiles show the request and not the queue behind it (at
# 100 ms the offered ~1,000 req/s was above the summaries' capacity here: a queue again).
PAUSE_MS = 500.0

console = make_console()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of the API and of Postgres (its server process and every backend)."""
    out = {}
    for name, roots in pids.items():
        total = 0.0
        for root in roots:
            total += cpu_seconds(root, reaped_children=True)
            if name == "postgres":
                total += sum(cpu_seconds(child) for child in _children(root))
        out[name] = total
    return out


async def _prepare(settings: Any, rows: int, catalog: Any) -> float:
    now = datetime.now(UTC)
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await history.generate(
            conn, catalog, rows, now - timedelta(days=30), now, cover=True
        )
    finally:
        await conn.close()


async def _check(url: str, auth: str, paths: list[str]) -> dict[str, Any]:
    """Every URL answers 200; the sizes of what the sampled customers hold."""
    rows, events = [], []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": auth}) as client:
        for path in paths[:200]:
            response = await client.get(path)
            response.raise_for_status()
            body = response.json()
            if "total" in body:
                rows.append(body["total"])
            else:
                events.append(len(body["data"]))
    return {"summary_rows_per_customer": _spread(rows), "history_page_rows": _spread(events)}


def _error_answers(log_path: Path) -> dict[str, int]:
    """Answers of status 400 and above in the API's access log, counted by status and path."""
    counts: dict[str, int] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return counts
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        status = record.get("status")
        if isinstance(status, int) and status >= 400:
            what = f"{status} {str(record.get('path', '?')).split('?')[0]}"
            counts[what] = counts.get(what, 0) + 1
        elif record.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            what = str(record.get("message", ""))[:80]
            counts[what] = counts.get(what, 0) + 1
    return counts


def _spread(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


async def run(
    rows: int, customers: int, seconds: float, urls: int, tool: str, smoke: bool
) -> Report:
    report = Report("customer_reads", smoke)
    report.parameters = {
        "rows_in_30_days": rows,
        "customers": customers,
        "connections": CONNECTIONS,
        "seconds_per_run": seconds,
        "distinct_urls": urls,
    }
    catalog = make_catalog(0, customers=customers)
    rng = random.Random(12)
    sample = [rng.choice(catalog.customers) for _ in range(urls)]
    summaries = [f"/api/v1/interaction-summaries?customerId={c}" for c in sample]
    histories = [f"/api/v1/interaction-history?customerId={c}" for c in sample]
    with tempfile.TemporaryDirectory(prefix="is-bench-customers-") as tmp:
        work = Path(tmp)
        with services.servers(kafka=False, state_dir=work / "servers") as srv:
            report.servers = services.describe(srv)
            postgres = services.server_pids(srv)["postgres"]
            async with services.fresh_settings(srv, "customers", work, topics=False) as settings:
                report.servers.update(
                    await services.server_versions(settings.database_url, settings.redis_url)
                )
                key = await services.catalog_and_key(settings, catalog)
                with console.status(f"{rows:,} interactions into the history"):
                    report.details["history_seconds"] = round(
                        await _prepare(settings, rows, catalog), 1
                    )
                async with services.api(settings, work / "logs") as api:
                    auth = f"Bearer {key}"
                    report.details["answers"] = {
                        **await _check(api.url, auth, summaries),
                        **{k: v for k, v in (await _check(api.url, auth, histories)).items() if v},
                    }
                    pids = {"api": [services.pid_of(api)], "postgres": postgres}
                    await _measure(
                        report, api.url, auth, summaries, histories, pids, seconds, tool,
                        api.log_path,
                    )  # fmt: skip
    return report


async def _measure(
    report: Report,
    url: str,
    auth: str,
    summaries: list[str],
    histories: list[str],
    pids: dict[str, list[int]],
    seconds: float,
    tool: str,
    log_path: Path,
) -> None:
    async def load(
        what: str, paths: list[str], delay_ms: float = 0.0
    ) -> tuple[loadgen.Load, dict[str, float]]:
        before = _cpu(pids)
        with console.status(f"{what}: {CONNECTIONS} connections, {seconds:.0f}s"):
            result = await loadgen.run(
                url, paths, auth, connections=CONNECTIONS, seconds=seconds, tool=tool,
                delay_ms=delay_ms,
            )  # fmt: skip
        after = _cpu(pids)
        if result.errors or result.non_2xx:  # kept in the results, with the API's reasons
            failed[what] = {"errors": result.errors, "non_2xx": result.non_2xx}
        per_request = {
            f"{name}_cpu_us_per_request": round(1e6 * (after[name] - before[name]) / result.requests, 1)
            for name in pids
        } if result.requests else {}  # fmt: skip
        return result, per_request

    failed: dict[str, dict[str, int]] = {}
    await loadgen.run(url, summaries, auth, connections=CONNECTIONS, seconds=3, tool=tool)
    summary, summary_cpu = await load("interaction-summaries, saturated", summaries)
    health, health_cpu = await load("health, saturated", ["/health"])
    first_pages, history_cpu = await load("interaction-history, saturated", histories)
    paced, paced_cpu = await load("interaction-summaries, paced", summaries, PAUSE_MS)
    paced_health, _ = await load("health, paced", ["/health"], PAUSE_MS)
    paced_history, _ = await load("interaction-history, paced", histories, PAUSE_MS)
    report.details["load"] = {
        "paced_pause_ms_per_client": PAUSE_MS,
        "summaries_paced": {**paced.as_json(), **paced_cpu},
        "health_paced": paced_health.as_json(),
        "history_first_page_paced": paced_history.as_json(),
        "tool": summary.tool,
        "summaries": {**summary.as_json(), **summary_cpu},
        "health": {**health.as_json(), **health_cpu},
        "history_first_page": {**first_pages.as_json(), **history_cpu},
    }
    if failed:
        report.details["failed_requests"] = failed
        report.details["api_error_answers"] = _error_answers(log_path)
    ceiling = f"GET /health, {health.tool}"
    cpu = f"API {summary_cpu.get('api_cpu_us_per_request')} µs + Postgres {summary_cpu.get('postgres_cpu_us_per_request')} µs CPU per request"
    report.add(
        Figure(
            "summaries requests/s, saturated",
            summary.rate,
            "req/s",
            health.rate,
            ceiling,
            (Target(">=", TARGET_RATIO, of="ratio"),),
            note=cpu,
        )
    )
    report.add(
        Figure(
            "summaries p99, saturated",
            summary.p99_ms,
            "ms",
            health.p99_ms,
            ceiling,
            (Target("<", SUMMARY_P99_MS),),
        )
    )
    report.add(Figure("summaries p50, saturated", summary.p50_ms, "ms", health.p50_ms, ceiling))
    offered = f"{paced.rate:,.0f} req/s offered: each client pauses {PAUSE_MS:.0f} ms"
    paced_ceiling = "GET /health, same pauses"
    for name, value, health_value, target in (
        ("summaries p99, paced", paced.p99_ms, paced_health.p99_ms, SUMMARY_P99_MS),
        (
            "history first page p99, paced",
            paced_history.p99_ms,
            paced_health.p99_ms,
            HISTORY_P99_MS,
        ),
    ):
        report.add(
            Figure(name, value, "ms", health_value, paced_ceiling, (Target("<", target),),
                   note=offered)
        )  # fmt: skip
    history_note = (
        f"{first_pages.rate:,.0f} req/s; API {history_cpu.get('api_cpu_us_per_request')} µs"
        f" + Postgres {history_cpu.get('postgres_cpu_us_per_request')} µs CPU per request"
    )
    report.add(
        Figure(
            "history first page p99, saturated",
            first_pages.p99_ms,
            "ms",
            health.p99_ms,
            ceiling,
            (Target("<", HISTORY_P99_MS),),
            note=history_note,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.customer_reads", description=__doc__)
    parser.add_argument("--rows", type=int, default=6_000_000, help="interactions in 30 days")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each load run")
    parser.add_argument("--urls", type=int, default=2000, help="random customers to cycle")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--output", type=Path, help="results file (default: bench/results/)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, short runs, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.customers, args.seconds, args.urls = 20_000, 5_000, 2.0, 100
    report = asyncio.run(
        run(args.rows, args.customers, args.seconds, args.urls, args.tool, args.smoke)
    )
    path = report.write(args.output)
    report.show(console, path)


if __name__ == "__main__":
    main()
