"""Figure 2: freshness, the time from producing an event to seeing it in the API.

``python -m bench.freshness [--rate 5000] [--seconds 60] [--smoke]``

A worker and an API run as subprocesses. Background traffic: ``interaction-summary produce
--rate 5000`` (the CLI's seeded synthetic events, stamped now), in its own process. Probes:
this process publishes 20 marker events a second, each for a customer of its own, in a
tenant of its own (``freshness``), through the same topic, partitions and worker batches
as the background traffic. It polls ``GET /api/v1/interaction-summary?groupBy=customer&days=1
&limit=500`` with that tenant's viewer key every ``--poll-ms``: marker customer ids count
down (``M-999999999``, ``M-999999998``...), so the API's order (total, then id) lists the
newest markers first. A marker's freshness runs from just before ``send`` to the first
response that lists it: an upper bound, at most one poll interval plus one request late.

The ceiling is the same probe with no background traffic (measured first, same run): what
the batch window, the broker and the stores cost on their own. Afterwards Postgres tells
whether the worker kept up: the background events it stored, and over how long
(``received_at``), is the rate it actually sustained. The topic's end offsets before and
after the window give the rate actually offered (the producer must reach ``--rate``), and
the window's CPU (worker, Postgres, Redis, broker, from /proc) over the events stored is the
whole-stack CPU per event, as ``bench.ingest`` reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from bench import kafka, services
from bench.report import (
    Figure,
    Report,
    Target,
    cpu_seconds,
    machine_busy_seconds,
    make_console,
    peak_rss_mb,
    percentile,
    stack_cpu_seconds,
)
from cli.synthetic import make_catalog
from core.config import Settings
from embedded.processes import Process, service_env

TENANT = "freshness"
MARKERS_PER_SECOND = 20
PAGE = 500
TARGET_P99_MS = 1000.0
_COUNTDOWN = 999_999_999

console = make_console()


class Probe:
    """Publishes markers and polls the API for them; keeps send and first-seen times."""

    def __init__(self, settings: Settings, api_url: str, key: str, poll_ms: float) -> None:
        self._settings = settings
        self._api_url = api_url
        self._key = key
        self._poll = poll_ms / 1000
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self._seq = 0
        self.polls = 0

    async def markers(self, producer: AIOKafkaProducer, seconds: float) -> list[str]:
        """Send markers for ``seconds`` at MARKERS_PER_SECOND; returns their customer ids."""
        ids: list[str] = []
        began = time.perf_counter()
        while (elapsed := time.perf_counter() - began) < seconds:
            due = int(elapsed * MARKERS_PER_SECOND) + 1 - len(ids)
            for _ in range(due):
                ids.append(await self._send(producer))
            await asyncio.sleep(1 / MARKERS_PER_SECOND / 2)
        return ids

    async def _send(self, producer: AIOKafkaProducer) -> str:
        self._seq += 1
        customer = f"M-{_COUNTDOWN - self._seq:09d}"
        event = {
            "id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "customerId": customer,
            "actionId": "freshness-probe",
            "type": "impression",
            "tenantId": TENANT,
        }
        self.sent[customer] = time.perf_counter()
        await producer.send(self._settings.topic, orjson.dumps(event), key=customer.encode())
        return customer

    async def poll(self, stop: asyncio.Event) -> None:
        """Poll the API until ``stop``; record when each marker is first listed."""
        params: dict[str, str | int] = {"groupBy": "customer", "days": 1, "limit": PAGE}
        headers = {"Authorization": f"Bearer {self._key}"}
        async with httpx.AsyncClient(base_url=self._api_url, headers=headers, timeout=10) as http:
            while not stop.is_set():
                tick = time.perf_counter()
                response = await http.get("/api/v1/interaction-summary", params=params)
                now = time.perf_counter()
                self.polls += 1
                if response.status_code == 200:
                    for row in orjson.loads(response.content)["summary"]:
                        self.seen.setdefault(row["customerId"], now)
                await asyncio.sleep(max(0.0, self._poll - (time.perf_counter() - tick)))

    async def wait_seen(self, ids: list[str], within: float) -> None:
        deadline = time.perf_counter() + within
        while any(i not in self.seen for i in ids) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def latencies_ms(self, ids: list[str], gave_up: float) -> tuple[list[float], int]:
        """Freshness of each marker of ``ids``, and how many were never seen.

        A marker never seen counts as the time from its send to ``gave_up`` (a lower bound).
        """
        found = [(self.seen.get(i, gave_up) - self.sent[i]) * 1000 for i in ids]
        return found, sum(1 for i in ids if i not in self.seen)


def _summary(values: list[float], lost: int) -> dict[str, Any]:
    return {
        "markers": len(values),
        "not_seen": lost,
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values, default=0.0),
        "min_ms": min(values, default=0.0),
    }


def _open_log(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


async def _background(settings: Settings, rate: float, count: int, log_dir: Path) -> Any:
    """``interaction-summary produce --rate`` as its own process (returns the process)."""
    log = _open_log(log_dir / "producer.log")
    argv = ["-m", "cli", "produce", "--rate", str(rate), "--count", str(count), "--seed", "1"]
    return await asyncio.create_subprocess_exec(
        sys.executable, *argv, "--quiet",
        env=service_env(settings), stdout=log, stderr=log,
    )  # fmt: skip


async def _to_postgres_ms(settings: Settings) -> dict[str, float]:
    """Per marker: from its send (its event timestamp) to the start of the worker's
    transaction that stored it (``received_at``): the share of freshness before Postgres."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT customer_id, extract(epoch FROM received_at - ts) * 1000 AS ms"
            " FROM interaction_history WHERE tenant_id = $1",
            TENANT,
        )
    finally:
        await conn.close()
    return {r["customer_id"]: float(r["ms"]) for r in rows}


async def _db_now(settings: Settings) -> datetime:
    conn = await asyncpg.connect(settings.database_url)
    try:
        moment: datetime = await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()
    return moment


async def _worker_rate(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Background events the worker stored between ``start`` and ``end`` (Postgres clock)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM interaction_history"
            " WHERE tenant_id = 'default' AND received_at >= $1 AND received_at < $2",
            start,
            end,
        )
        backlog = await conn.fetchval("SELECT count(*) FROM interaction_history")
    finally:
        await conn.close()
    seconds = (end - start).total_seconds()
    return {
        "events": stored,
        "seconds": round(seconds, 2),
        "rate": stored / seconds if seconds else 0.0,
        "history_rows_at_end": backlog,
    }


async def run(
    rate: float,
    seconds: float,
    idle_seconds: float,
    poll_ms: float,
    smoke: bool,
    overrides: dict[str, Any],
) -> Report:
    report = Report("freshness", smoke)
    report.parameters = {
        "background_rate": rate,
        "seconds": seconds,
        "idle_seconds": idle_seconds,
        "markers_per_second": MARKERS_PER_SECOND,
        "poll_ms": poll_ms,
        "worker_settings_overridden": overrides,
    }
    with tempfile.TemporaryDirectory(prefix="is-bench-fresh-") as tmp:
        work = Path(tmp)
        with services.servers(kafka=True, state_dir=work / "servers") as srv:
            report.servers = services.describe(srv)
            async with services.fresh_settings(srv, "fresh", work, **overrides) as settings:
                report.servers.update(
                    await services.server_versions(settings.database_url, settings.redis_url)
                )
                await services.catalog_and_key(settings, make_catalog(0))
                key = await services.viewer_key(settings, TENANT)
                # CPU of the servers too (from the environment: found by port, see services).
                server_pids = services.server_pids(srv)
                with services.worker(settings, work / "logs") as worker:
                    async with services.api(settings, work / "logs") as api:
                        await _measure(
                            report, settings, api, services.pid_of(worker), server_pids, key, rate, seconds,
                            idle_seconds, poll_ms, work,
                        )  # fmt: skip
                        report.details["api_peak_rss_mb"] = round(
                            peak_rss_mb(services.pid_of(api)), 1
                        )
                    report.details["worker_peak_rss_mb"] = round(
                        peak_rss_mb(services.pid_of(worker)), 1
                    )
                    if not worker.running:
                        raise RuntimeError(f"the worker died:\n{worker.log_tail()}")
    offered = report.details["offered"]
    report.add(
        Figure(
            "background rate offered (published in the window)",
            offered["rate"],
            "events/s",
            rate,
            "rate asked for",
            (Target(">=", 0.95, of="ratio"),),
            note=f"{offered['events']:,} events in {offered['seconds']:.0f}s",
        )
    )
    stored = report.details["worker_stored"]
    report.add(
        Figure(
            "background rate the worker stored",
            stored["rate"],
            "events/s",
            rate,
            "rate produced, same window",
            (Target(">=", 0.95, of="ratio"),),
            note=f"{stored['events']:,} events in {stored['seconds']:.0f}s",
        )
    )
    return report


async def _measure(
    report: Report,
    settings: Settings,
    api: Process,
    worker_pid: int,
    servers: dict[str, list[int]],
    key: str,
    rate: float,
    seconds: float,
    idle_seconds: float,
    poll_ms: float,
    work: Path,
) -> None:
    probe = Probe(settings, api.url, key, poll_ms)
    stop = asyncio.Event()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0
    )
    await producer.start()
    poller = asyncio.create_task(probe.poll(stop))
    try:
        with console.status("waiting for the worker to join and count a first marker"):
            first = [await probe._send(producer)]
            await producer.flush()
            await probe.wait_seen(first, 120)
            if not probe.seen:
                raise RuntimeError("the first marker never showed up in the API")
        with console.status(f"idle: markers only, {idle_seconds:.0f}s"):
            idle = await probe.markers(producer, idle_seconds)
            await probe.wait_seen(idle, 10)
        warmup = 5.0
        total = warmup + seconds + 5
        background = await _background(settings, rate, int(rate * total), work / "logs")
        try:
            with console.status(f"background {rate:,.0f} events/s: warm-up {warmup:.0f}s"):
                await probe.markers(producer, warmup)
            with console.status(f"background {rate:,.0f} events/s: markers for {seconds:.0f}s"):
                window_start = await _db_now(settings)
                pids = {
                    "worker": [worker_pid],
                    "api": [services.pid_of(api)],
                    "producer": [background.pid],
                    **servers,
                }
                offsets_before = await kafka.end_offsets(
                    settings.kafka_bootstrap_servers, settings.topic
                )
                cpu_before = stack_cpu_seconds(pids)
                own_before = cpu_seconds()
                busy_before, wall_before = machine_busy_seconds(), time.perf_counter()
                loaded = await probe.markers(producer, seconds)
                wall = time.perf_counter() - wall_before
                cpu_used = {n: c - cpu_before[n] for n, c in stack_cpu_seconds(pids).items()}
                report.details["cores_used_in_window"] = {
                    **{n: round(c / wall, 2) for n, c in cpu_used.items()},
                    "probe (this process)": round((cpu_seconds() - own_before) / wall, 2),
                    "machine": round((machine_busy_seconds() - busy_before) / wall, 2),
                }
                offsets_after = await kafka.end_offsets(
                    settings.kafka_bootstrap_servers, settings.topic
                )
                published = sum(offsets_after.values()) - sum(offsets_before.values())
                report.details["offered"] = {
                    "events": published - len(loaded),
                    "seconds": round(wall, 2),
                    "rate": (published - len(loaded)) / wall,
                    "markers": len(loaded),
                }
                window_end = await _db_now(settings)
                await probe.wait_seen(loaded, 10)
        finally:
            with contextlib.suppress(ProcessLookupError):
                background.terminate()
            await background.wait()
    finally:
        stop.set()
        await poller
        await producer.stop()
    gave_up = time.perf_counter()
    idle_ms, idle_lost = probe.latencies_ms(idle, gave_up)
    loaded_ms, loaded_lost = probe.latencies_ms(loaded, gave_up)
    to_postgres = await _to_postgres_ms(settings)
    report.details["produce_to_postgres_write"] = {
        name: _summary([to_postgres[i] for i in ids if i in to_postgres], 0)
        for name, ids in (("idle", idle), ("loaded", loaded))
    }
    report.details["idle"] = _summary(idle_ms, idle_lost)
    report.details["loaded"] = _summary(loaded_ms, loaded_lost)
    report.details["polls"] = probe.polls
    report.details["worker_stored"] = await _worker_rate(settings, window_start, window_end)
    stored = report.details["worker_stored"]["events"]
    counted = ["worker", *(n for n in ("postgres", "redis", "broker") if servers.get(n))]
    stack = {n: cpu_used[n] for n in counted}
    unseen = [n for n, p in servers.items() if not p]
    if stored:
        per_event = {n: c / stored * 1e6 for n, c in stack.items()}
        report.details["cpu_us_per_stored_event"] = {
            **{n: round(v, 1) for n, v in per_event.items()},
            "stack": round(sum(per_event.values()), 1),
        }
        report.add(
            Figure(
                "whole-stack CPU per stored event",
                sum(per_event.values()),
                "µs/event",
                note=" + ".join(f"{n} {v:.0f}" for n, v in per_event.items())
                + (f" ({', '.join(unseen)} not seen: not counted)" if unseen else "")
                + "; Redis/Postgres include the API polls",
            )
        )
    ceiling = "no background traffic"
    note = f"{len(loaded_ms):,} markers, {loaded_lost} not seen within 10 s after the window"
    for q in (50, 99):
        targets = (Target("<", TARGET_P99_MS),) if q == 99 else ()
        report.add(
            Figure(
                f"freshness p{q} at {rate:,.0f} events/s",
                percentile(loaded_ms, q),
                "ms",
                percentile(idle_ms, q),
                ceiling,
                targets,
                note=note if q == 99 else "",
            )
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__)
    parser.add_argument("--rate", type=float, default=5000.0, help="background events/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--idle-seconds", type=float, default=15.0, help="ceiling window")
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument("--output", type=Path, help="results file (default: bench/results/)")
    parser.add_argument("--smoke", action="store_true", help="low rate, short, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rate, args.seconds, args.idle_seconds = 500.0, 4.0, 2.0
    overrides: dict[str, object] = {}
    report = asyncio.run(
        run(args.rate, args.seconds, args.idle_seconds, args.poll_ms, args.smoke, overrides)
    )
    path = report.write(args.output)
    report.show(console, path)


if __name__ == "__main__":
    main()
