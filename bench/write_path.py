"""The write path without Kafka: CPU per event of each part (issue 10's profiling aid).

``python -m bench.write_path [--events N] [--batch B] [--workload realtime|backfill]``
drives ``BatchProcessor.process`` (parse, the Postgres statement, the Redis script) over
synthetic events in batches of B, one batch after another, and prints the CPU per event
of this process (the worker's own Python besides Faust), of the Postgres server (every
backend) and of the Redis server, from /proc, over the whole drain. A fresh database and
Redis prefix each run; servers from DATABASE_URL / REDIS_URL, else embedded (fsync on).
``--profile FILE`` also writes a py-spy flame graph of this process (py-spy must be on PATH).
A step of the write path is measured by running this before and after it in one sitting
(the machine is shared: compare neighbours).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from bench import services
from bench.report import RESULTS_DIR, cpu_seconds, git_commit, stack_cpu_seconds
from cli.synthetic import encode, workload_events
from core.db import create_pool
from core.hot import oldest_kept_starts
from core.periods import Period
from embedded.isolation import create_database, database_dsn, delete_keys, drop_databases
from streams.counters import unique_by_id
from streams.pipeline import BatchProcessor, RawMessage, split_batch
from streams.postgres_sink import WRITE_BATCH, _history_columns, own_shards
from streams.redis_sink import RedisSink


async def _no_dead_letters(letters: object) -> None:
    raise AssertionError("synthetic events are all valid")


async def run(
    database_admin: str,
    redis_url: str,
    pids: dict[str, list[int]],
    events: int,
    batch: int,
    workload: str,
    profile: Path | None,
    explain: bool,
) -> dict[str, object]:
    now = datetime.now(UTC)
    generated = workload_events(workload, 7, now - timedelta(seconds=1))
    messages = []
    for offset, event in zip(range(events), generated, strict=False):
        key, value = encode(event)
        messages.append(RawMessage(key, value, "bench", 0, offset, now))
    database = await create_database(database_admin, "bench_write_path")
    dsn = database_dsn(database_admin, database)
    prefix = f"bench-wp-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        sink = RedisSink(redis, prefix)
        processor = BatchProcessor(pool, sink, _no_dead_letters, timedelta(minutes=5))
        await processor.keep_redis_exact()  # the first resync: Redis ready under an epoch
        spy = None
        if profile is not None:
            spy = await asyncio.create_subprocess_exec(
                *("py-spy", "record", "-o", str(profile), "-p", str(os.getpid()), "-r", "200"),
                *(("--format", "raw") if profile.suffix == ".txt" else ()),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)
        before, own, started = stack_cpu_seconds(pids), cpu_seconds(), time.perf_counter()
        for i in range(0, len(messages), batch):
            await processor.process(messages[i : i + batch])
        seconds = time.perf_counter() - started
        after, own_after = stack_cpu_seconds(pids), cpu_seconds()
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            await spy.wait()
        plan = await _explain(pool, messages[-batch:], now) if explain else None
        per_event = {name: (after[name] - before[name]) * 1e6 / events for name in after}
        per_event["worker"] = (own_after - own) * 1e6 / events
        return {
            "events": events,
            "batch": batch,
            "workload": workload,
            "seconds": round(seconds, 2),
            "events_per_second": round(events / seconds),
            "cpu_us_per_event": {k: round(v, 1) for k, v in per_event.items()},
            "stack_us_per_event": round(sum(per_event.values()), 1),
            **({"plan": plan} if plan else {}),
        }
    finally:
        await pool.close()
        await delete_keys(redis_url, prefix)
        await redis.aclose()
        await drop_databases(database_admin, [database])


async def _explain(pool: asyncpg.Pool, messages: list[RawMessage], now: datetime) -> str:
    """EXPLAIN ANALYZE of the write statement for ``messages`` as new events (rolled back)."""
    fresh = [
        RawMessage(m.key, m.value.replace(b'"id":"', b'"id":"x'), m.topic, 0, m.offset, now)
        for m in messages
        if m.value is not None
    ]
    accepted, _ = split_batch(fresh, now, timedelta(minutes=5))
    kept = oldest_kept_starts(now)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            rows = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + WRITE_BATCH,
                *_history_columns(unique_by_id(accepted)),
                kept[Period.DAILY],
                kept[Period.WEEKLY],
                kept[Period.MONTHLY],
                own_shards(1)[0],
            )
        finally:
            await tx.rollback()
    return "\n".join(r[0] for r in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.write_path", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--workload", default="realtime", choices=("realtime", "backfill"))
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy flame graph (.svg; .txt: collapsed stacks)",
    )
    parser.add_argument("--explain", action="store_true", help="print one batch's plan")
    parser.add_argument("--tag", default=None, help="write results/write_path-<tag>.json")
    args = parser.parse_args(argv)
    with services.servers(kafka=False) as srv:
        pids = {k: v for k, v in services.server_pids(srv).items() if k != "broker"}
        result = asyncio.run(
            run(
                srv.database_url,
                srv.redis_url,
                pids,
                args.events,
                args.batch,
                args.workload,
                args.profile,
                args.explain,
            )
        )
    result["commit"] = git_commit()
    result["load_average"] = os.getloadavg()
    plan = result.pop("plan", None)
    text = json.dumps(result, indent=2)
    print(text)
    if plan:
        print(plan)
    if args.tag:
        (RESULTS_DIR / f"write_path-{args.tag}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
