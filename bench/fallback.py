"""Figure 4: the fallback aggregation over raw history, when no bucket holds the period.

``python -m bench.fallback [--rows 10000000] [--repeat 5] [--smoke]``

10,000,000 history rows over 90 days (``bench.history``: the synthetic catalog and
distributions, written by Postgres itself), buckets empty. For ``groupBy=action`` and
``groupBy=customer``, ``days=30``, both windows (``period``: the current month so far;
``rolling``: the last 30 UTC days), three timings, interleaved round by round so they share
the machine's load of the moment:

- the ceiling: ``SELECT count(*)`` over the same rows (same predicate as the API's query);
- the API's SQL: ``api.queries.history_page`` (``HISTORY_PAGE``/``HISTORY_COUNT`` with the
  session settings the API uses), through an asyncpg pool as the API runs it;
- the full HTTP request to a running API (``source`` must be ``history``).

Medians of ``--repeat`` rounds after one warm-up. Each query's ``EXPLAIN (ANALYZE, BUFFERS)``
goes into the results file: where the time goes. Target: under 2x the ceiling and 1.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from api import queries
from api.summary import GroupBy
from bench import history, services
from bench.report import Figure, Report, Target, make_console, peak_rss_mb
from cli.synthetic import make_catalog
from core.db import Connection
from core.ranges import TimeRange, summary_range

GROUPINGS = (GroupBy.ACTION, GroupBy.CUSTOMER)
WINDOWS = ("period", "rolling")
DAYS = 30
LIMIT = 100
TARGET_SECONDS = 1.5
TARGET_RATIO = 2.0

CEILING = (
    "SELECT count(*) FROM interaction_history"
    " WHERE tenant_id = $1 AND ts >= $2 AND ($3::timestamptz IS NULL OR ts < $3)"
)

console = make_console()


async def _timed(call: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await call
    return time.perf_counter() - began, result


async def _explain(conn: Connection, sql: str, *args: object) -> str:
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    return "\n".join(r[0] for r in rows)


async def _case(
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    group_by: GroupBy,
    window: str,
    rng: TimeRange,
    repeat: int,
) -> dict[str, Any]:
    """Ceiling, SQL and HTTP timings of one (groupBy, window), ``repeat`` interleaved rounds."""
    args = ("default", rng.start, rng.end)
    params = {"groupBy": group_by.value, "days": DAYS, "window": window, "limit": LIMIT}
    timings: dict[str, list[float]] = {"ceiling": [], "sql": [], "http": []}
    rows = 0
    for round_ in range(repeat + 1):  # round 0 warms caches (catalog, buffers) and is dropped
        ceiling, rows = await _timed(pool.fetchval(CEILING, *args))
        sql, page = await _timed(
            queries.history_page(pool, "default", group_by, rng.start, rng.end, LIMIT, 0)
        )
        took, response = await _timed(http.get("/api/v1/interaction-summary", params=params))
        response.raise_for_status()
        body = response.json()
        if body["source"] != "history" or body["total"] != page.total_groups:
            raise RuntimeError(f"expected a history answer like the SQL's, got {body['source']}")
        if round_:
            timings["ceiling"].append(ceiling)
            timings["sql"].append(sql)
            timings["http"].append(took)
    async with pool.acquire() as conn:
        plans = {"ceiling": await _explain(conn, CEILING, *args)}
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(queries.HISTORY_SETTINGS)  # as history_page runs it
            plans["sql"] = await _explain(conn, queries.HISTORY_PAGE[group_by], *args, LIMIT, 0)
            if group_by is GroupBy.CUSTOMER:
                ids = [g.group_id for g in page.groups]
                plans["sql_distinct_actions"] = await _explain(
                    conn, queries.HISTORY_CUSTOMER_ACTIONS, *args, ids
                )
    return {
        "group_by": group_by.value,
        "window": window,
        "range": [rng.start.isoformat(), rng.end.isoformat() if rng.end else None],
        "rows_in_range": rows,
        "groups": page.total_groups,
        "seconds": timings,
        "median": {k: statistics.median(v) for k, v in timings.items()},
        "plans": plans,
    }


def _figures(report: Report, case: dict[str, Any]) -> None:
    m = case["median"]
    label = f"{case['group_by']}, window={case['window']}"
    ceiling = f"count(*) of the {case['rows_in_range']:,} rows"
    targets = (Target("<", TARGET_SECONDS * 1000), Target("<", TARGET_RATIO, of="ratio"))
    for kind, what in (("http", "HTTP"), ("sql", "SQL")):
        report.add(
            Figure(
                f"{label} {what}",
                m[kind] * 1000,
                "ms",
                m["ceiling"] * 1000,
                ceiling,
                targets,
                note=f"{case['groups']:,} groups" if kind == "http" else "",
            )
        )


async def run(rows: int, repeat: int, smoke: bool) -> Report:
    report = Report("fallback", smoke)
    report.parameters = {"rows": rows, "days_of_history": 90, "repeat": repeat, "limit": LIMIT}
    catalog = make_catalog(0)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="is-bench-fallback-") as tmp:
        work = Path(tmp)
        with services.servers(kafka=False, state_dir=work / "servers") as srv:
            report.servers = services.describe(srv)
            async with services.fresh_settings(srv, "fallback", work, topics=False) as settings:
                report.servers.update(
                    await services.server_versions(settings.database_url, settings.redis_url)
                )
                key = await services.catalog_and_key(settings, catalog)
                conn = await asyncpg.connect(settings.database_url)
                try:
                    with console.status(f"generating {rows:,} history rows in Postgres"):
                        seconds = await history.generate(
                            conn, catalog, rows, now - timedelta(days=90), now
                        )
                    console.print(f"{rows:,} history rows in {seconds:.0f}s")
                    report.details["generate_seconds"] = round(seconds, 1)
                    report.details["table_size"] = await conn.fetchval(
                        "SELECT pg_size_pretty(pg_total_relation_size('interaction_history'))"
                    )
                finally:
                    await conn.close()
                pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
                async with (
                    services.api(settings, work / "logs") as api,
                    httpx.AsyncClient(
                        base_url=api.url,
                        headers={"Authorization": f"Bearer {key}"},
                        timeout=60,
                    ) as http,
                ):
                    cases = []
                    for window in WINDOWS:
                        rng = summary_range(DAYS, window == "rolling", datetime.now(UTC))
                        for group_by in GROUPINGS:
                            with console.status(f"timing groupBy={group_by} window={window}"):
                                case = await _case(pool, http, group_by, window, rng, repeat)
                            cases.append(case)
                            _figures(report, case)
                    report.details["api_peak_rss_mb"] = round(peak_rss_mb(services.pid_of(api)), 1)
                await pool.close()
                report.details["cases"] = cases
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fallback", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--output", type=Path, help="results file (default: bench/results/)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, for CI (< 30 s)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.repeat = min(args.rows, 50_000), 1
    report = asyncio.run(run(args.rows, args.repeat, args.smoke))
    path = report.write(args.output)
    report.show(console, path)


if __name__ == "__main__":
    main()
