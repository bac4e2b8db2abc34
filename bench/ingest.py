"""Figure 1 and 5a: ingest throughput and worker memory over a preloaded topic.

    python -m bench.ingest --events 1000000     # the figure (about 10 minutes here)
    python -m bench.ingest --smoke              # a few thousand events, for CI

Preloads ``--events`` synthetic interactions (``bench.synthetic``) into a fresh topic, then
drains it three times, one consumer group each, every consumer in its own process:

1. plain aiokafka, counting only: the ceiling of Python on this broker;
2. the worker's Faust app (``streams.app.create_app``, same batch settings) with a
   do-nothing agent: the ceiling of Faust;
3. the real worker (``python -m streams``): exactly-once into Postgres and Redis. Its rate is
   timed between its first and last committed batch (read from its /metrics), its CPU and
   peak RSS from /proc; afterwards both stores are checked to hold exactly ``--events``.

Servers come from KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL and REDIS_URL; those not set are
started embedded (``cli.embedded``). The worker writes to a database created for the run
(dropped afterwards) and a Redis key prefix of its own (deleted afterwards).

Prints the figures, ceilings and ratios, and writes them as JSON under ``bench/results/``.
Nothing here asserts a timing: the targets are reported as met or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from bench import kafka
from bench.consumers import Measured
from bench.report import peak_rss_mb
from bench.synthetic import SyntheticEvents, encode
from core import keys
from core.config import Settings
from core.periods import ALLTIME_START, Period

RESULTS = Path(__file__).parent / "results"
TARGET_RATE = 30_000
TARGET_RATIO = 0.8
TARGET_RSS_MB = 250
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Servers:
    kafka: str
    database_url: str
    redis_url: str
    embedded: list[str] = field(default_factory=list)


@dataclass
class Run:
    """Names of everything this run creates, so that it can all be removed afterwards."""

    id: str
    servers: Servers
    partitions: int
    workdir: Path
    uvloop: bool = False

    @property
    def topic(self) -> str:
        return f"bench-ingest-{self.id}"

    @property
    def database(self) -> str:
        return f"bench_ingest_{self.id.replace('-', '_')}"

    @property
    def redis_prefix(self) -> str:
        return f"bench-{self.id}"

    def group(self, consumer: str) -> str:
        return f"bench-{consumer}-{self.id}"

    def database_url(self) -> str:
        parts = urlsplit(self.servers.database_url)
        return urlunsplit(parts._replace(path=f"/{self.database}"))

    def env(self, consumer: str, metrics_port: int = 0) -> dict[str, str]:
        """Environment of a consumer process: the worker's own settings, names of this run."""
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.servers.kafka,
            "DATABASE_URL": self.database_url(),
            "REDIS_URL": self.servers.redis_url,
            "INTERACTION_SUMMARY_TOPIC": self.topic,
            "INTERACTION_SUMMARY_DLQ_TOPIC": f"{self.topic}.dlq",
            "INTERACTION_SUMMARY_TOPIC_PARTITIONS": str(self.partitions),
            "INTERACTION_SUMMARY_CONSUMER_GROUP": self.group(consumer),
            "INTERACTION_SUMMARY_REDIS_PREFIX": self.redis_prefix,
            "INTERACTION_SUMMARY_WORKER_METRICS_PORT": str(metrics_port),
            "INTERACTION_SUMMARY_WORKER_DATA_DIR": str(self.workdir / consumer),
        }


# --- servers --------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[Servers]:
    """The servers named in the environment; the missing ones started embedded."""
    given = (
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        os.environ.get("DATABASE_URL"),
        os.environ.get("REDIS_URL"),
    )
    if all(given):
        yield Servers(*given)  # type: ignore[arg-type]
        return
    from cli.embedded import embedded_servers

    names = [
        name for name, url in zip(("kafka", "postgres", "redis"), given, strict=True) if not url
    ]
    with embedded_servers(
        workdir / "servers", kafka_bootstrap=given[0], database_url=given[1], redis_url=given[2]
    ) as started:
        yield Servers(started.kafka_bootstrap, started.database_url, started.redis_url, names)


async def _create_database(run: Run) -> None:
    conn = await asyncpg.connect(run.servers.database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{run.database}"')
    finally:
        await conn.close()


async def _clean_up(run: Run) -> None:
    """Drop the run's database, Redis keys and topics (best effort: report, do not fail)."""
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(run.servers.database_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{run.database}" WITH (FORCE)')
        finally:
            await conn.close()
    with contextlib.suppress(Exception):
        redis = Redis.from_url(run.servers.redis_url)
        try:
            batch = [
                key async for key in redis.scan_iter(match=f"{run.redis_prefix}:*", count=1000)
            ]
            for start in range(0, len(batch), 1000):
                await redis.unlink(*batch[start : start + 1000])
        finally:
            await redis.aclose()
    leaders = [f"{run.group(c)}-__assignor-__leader" for c in ("noop", "worker")]
    with contextlib.suppress(Exception):
        await kafka.delete_topics(run.servers.kafka, [run.topic, f"{run.topic}.dlq", *leaders])


# --- preload --------------------------------------------------------------------------------


async def preload(run: Run, events: int, seed: int) -> dict[str, float]:
    """Fill the run's topic with ``events`` synthetic interactions up to now."""
    await kafka.create_topic(run.servers.kafka, run.topic, run.partitions)
    generator = SyntheticEvents(seed, datetime.now(UTC))

    def messages() -> Iterator[tuple[bytes, bytes]]:
        left = events
        while left:
            chunk = generator.batch(min(left, 4096))
            left -= len(chunk)
            yield from (encode(event) for event in chunk)

    started = time.perf_counter()
    sent = await kafka.preload(run.servers.kafka, run.topic, run.partitions, messages())
    seconds = time.perf_counter() - started
    return {
        "events": sent,
        "seconds": round(seconds, 2),
        "events_per_second": round(sent / seconds),
    }


# --- the three consumers --------------------------------------------------------------------


def run_ceiling(run: Run, kind: str, events: int, timeout: float) -> Measured:
    """Run ``bench.consumers KIND`` in a child process and read the result it writes."""
    group = "noop" if kind == "faust-noop" else "aiokafka"
    result = run.workdir / f"{group}.json"
    log_path = run.workdir / f"{group}.log"
    argv = [sys.executable, "-m", "bench.consumers", kind, "--events", str(events)]
    if run.uvloop:
        argv.append("--uvloop")
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            [*argv, "--result", str(result)], env=run.env(group), stdout=log, stderr=log
        ) as child,
    ):
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            raise RuntimeError(f"{kind} did not read {events} events in {timeout:.0f}s") from None
    if not result.exists():
        raise RuntimeError(f"{kind} exited {child.returncode} with no result:\n{_tail(log_path)}")
    return Measured(**json.loads(result.read_text()))


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class _Sample:
    at: float
    done: int
    cpu: float
    machine_busy: float


def _worker_done(metrics_url: str) -> int | None:
    """Events the worker has finished with (counted, duplicate or dead-lettered)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    names = ("interactions_counted_total", "interactions_duplicate_total",
             "interactions_rejected_total")  # fmt: skip
    total = 0.0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            total += float(value)
    return int(total)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / _CLK_TCK


def run_worker(run: Run, events: int, timeout: float, processes: int = 1) -> tuple[Measured, float]:
    """Run ``python -m streams`` (``processes`` of them, one group) until ``events`` are done.

    Returns the measure (CPU summed over the processes, the largest peak RSS) and the cores
    the whole machine kept busy meanwhile (worker, Postgres, Redis, broker, anything else).
    """
    from cli.embedded import free_port

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        children: list[tuple[subprocess.Popen[bytes], str]] = []
        for index in range(processes):
            port = free_port()
            log = stack.enter_context((run.workdir / f"worker-{index}.log").open("wb"))
            argv = [sys.executable, "-m", "streams"]
            if run.uvloop:  # what `python -m streams` would do with uvloop enabled first
                argv[1:] = ["-c", _UVLOOP_WORKER]
            child = subprocess.Popen(argv, env=run.env("worker", port), stdout=log, stderr=log)
            stack.callback(_stop, child)
            children.append((child, f"http://127.0.0.1:{port}/metrics"))
        first, last = _watch_workers(children, events, timeout)
        asyncio.run(_redis_caught_up(run, within=60.0))
        peak = max(peak_rss_mb(child.pid) for child, _ in children)
    seconds = last.at - first.at
    measured = Measured(
        last.done - first.done, seconds, first.at - started, last.cpu - first.cpu, peak
    )
    return measured, (last.machine_busy - first.machine_busy) / seconds if seconds else 0.0


_UVLOOP_WORKER = (
    "from bench.consumers import use_uvloop; use_uvloop(); "
    "from streams.app import run_worker; run_worker()"
)


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _watch_workers(
    children: list[tuple[subprocess.Popen[bytes], str]], events: int, timeout: float
) -> tuple[_Sample, _Sample]:
    deadline = time.perf_counter() + timeout
    first: _Sample | None = None
    while True:
        for child, _ in children:
            if child.poll() is not None:
                raise RuntimeError(f"a worker exited with code {child.returncode}")
        done = sum(_worker_done(url) or 0 for _, url in children)
        cpu = sum(_cpu_seconds(child.pid) for child, _ in children)
        sample = _Sample(time.perf_counter(), done, cpu, _machine_busy_seconds())
        if first is None and done > 0:
            first = sample
        if first is not None and done >= events:
            return first, sample
        if sample.at > deadline:
            raise RuntimeError(f"the worker finished {done} of {events} events in {timeout:.0f}s")
        time.sleep(0.5)  # /metrics costs the worker CPU: poll gently


async def _redis_caught_up(run: Run, within: float) -> None:
    """Wait (bounded) until the worker has applied every committed batch to Redis."""
    conn = await asyncpg.connect(run.database_url())
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not await conn.fetchval("SELECT count(*) FROM redis_outbox"):
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def check_exact(run: Run, events: int) -> dict[str, Any]:
    """Both stores hold every event exactly once: all-time action totals sum to ``events``."""
    conn = await asyncpg.connect(run.database_url())
    redis = Redis.from_url(run.servers.redis_url)
    rank = keys.rank_key(run.redis_prefix, "default", "action", Period.ALLTIME, ALLTIME_START)
    try:
        history = await conn.fetchval("SELECT count(*) FROM interaction_history")
        postgres = await conn.fetchval(
            "SELECT coalesce(sum(total), 0) FROM interaction_bucket"
            " WHERE dimension = 'action' AND period = 'alltime'"
        )
        pending = await conn.fetchval("SELECT count(*) FROM redis_outbox")
        ranked = await redis.zrange(rank, 0, -1, withscores=True)
        redis_total = -sum(float(pair[1]) for pair in ranked)
    finally:
        await conn.close()
        await redis.aclose()
    return {
        "history_rows": history,
        "postgres_total": int(postgres),
        "redis_total": int(redis_total),
        "outbox_pending": pending,
        "exact": history == postgres == int(redis_total) == events and pending == 0,
    }


# --- report ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    packages = ("faust-streaming", "aiokafka", "asyncpg", "redis", "mode-streaming", "uvloop")
    versions = {}
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(total_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


async def server_versions(servers: Servers) -> dict[str, str]:
    conn = await asyncpg.connect(servers.database_url)
    redis = Redis.from_url(servers.redis_url)
    try:
        postgres = await conn.fetchval("SHOW server_version")
        info = await redis.info("server")
    finally:
        await conn.close()
        await redis.aclose()
    return {
        "postgres": str(postgres),
        "redis": str(info.get("redis_version")),
        "embedded": ",".join(servers.embedded) or "none",
    }


def _timed(measured: Measured) -> bool:
    """Whether the run lasted long enough for a rate (a tiny topic fits in one fetch)."""
    return measured.seconds >= 0.05 and measured.events > 0


def _row(measured: Measured) -> dict[str, Any]:
    timed = _timed(measured)
    return {
        "events": measured.events,
        "seconds": round(measured.seconds, 2),
        "events_per_second": round(measured.rate) if timed else None,
        "seconds_to_first_message": round(measured.startup_seconds, 2),
        "cpu_cores": round(measured.cpu_seconds / measured.seconds, 2) if timed else None,
        "peak_rss_mb": round(measured.peak_rss_mb, 1),
    }


def figures(results: dict[str, Measured]) -> dict[str, Any]:
    rows = {name: _row(m) for name, m in results.items()}
    rate = {name: m.rate for name, m in results.items() if _timed(m)}
    ratios = {}
    if "worker" in rate and "faust_noop" in rate:
        ratios["worker_vs_faust_noop"] = round(rate["worker"] / rate["faust_noop"], 3)
    if "worker" in rate and "aiokafka" in rate:
        ratios["worker_vs_aiokafka"] = round(rate["worker"] / rate["aiokafka"], 3)
    if "faust_noop" in rate and "aiokafka" in rate:
        ratios["faust_noop_vs_aiokafka"] = round(rate["faust_noop"] / rate["aiokafka"], 3)
    targets = {}
    if "worker" in rate:
        targets["worker_events_per_second"] = _target(rate["worker"], TARGET_RATE, ">=")
    if "worker" in results:
        targets["worker_peak_rss_mb"] = _target(results["worker"].peak_rss_mb, TARGET_RSS_MB, "<")
    if "worker_vs_faust_noop" in ratios:
        targets["worker_vs_faust_noop"] = _target(
            ratios["worker_vs_faust_noop"], TARGET_RATIO, ">="
        )
    return {"consumers": rows, "ratios": ratios, "targets": targets}


def _target(measured: float, target: float, rule: str) -> dict[str, Any]:
    met = measured >= target if rule == ">=" else measured < target
    return {"measured": round(measured, 3), "target": f"{rule} {target}", "met": met}


def print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"Ingest: {report['events']:,} events preloaded, {report['partitions']} partitions"
    )
    for column in ("consumer", "events/s", "seconds", "to 1st msg (s)", "CPU cores", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "consumer" else "right")
    labels = {
        "aiokafka": "plain aiokafka (ceiling)",
        "faust_noop": "Faust no-op agent (ceiling)",
        "worker": "worker, exactly-once (fig. 1)",
    }
    for name, row in report["consumers"].items():
        rate = row["events_per_second"]
        table.add_row(
            labels[name], "n/a" if rate is None else f"{rate:,}", f"{row['seconds']}",
            f"{row['seconds_to_first_message']}", f"{row['cpu_cores']}", f"{row['peak_rss_mb']}",
        )  # fmt: skip
    console.print(table)
    for name, value in report["ratios"].items():
        console.print(f"ratio {name}: {value:.1%}")
    for name, target in report["targets"].items():
        verdict = "[green]met[/]" if target["met"] else "[red]not met[/]"
        console.print(
            f"target {name}: {target['measured']:,} (target {target['target']}) {verdict}"
        )
    if "exact" in report:
        console.print(f"exactly-once check: {report['exact']}")


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--smoke", action="store_true", help="20,000 events, results to *-smoke.json"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="aiokafka,faust_noop,worker",
                        help="comma-separated subset of aiokafka,faust_noop,worker")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the group")
    parser.add_argument(
        "--uvloop", action="store_true", help="run the Faust consumers and the worker on uvloop"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per consumer, seconds")
    args = parser.parse_args(argv)
    events = 20_000 if args.smoke else args.events
    output = args.output or RESULTS / ("ingest-smoke.json" if args.smoke else "ingest.json")
    console = Console(width=None if sys.stdout.isatty() else 110)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    with servers(workdir) as found:
        run_id = f"{int(time.time())}-{os.getpid()}"
        run = Run(run_id, found, Settings().topic_partitions, workdir, args.uvloop)
        try:
            report = _measure(run, events, args, console)
        except BaseException:
            console.print(f"[red]failed[/]: logs kept in {workdir}")
            raise
        finally:
            asyncio.run(_clean_up(run))
    shutil.rmtree(workdir, ignore_errors=True)
    report["smoke"] = args.smoke
    print_report(report, console)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written {output}")


def _measure(run: Run, events: int, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    settings = Settings()
    seed, only, timeout = args.seed, args.only.split(","), args.timeout
    report: dict[str, Any] = {
        "benchmark": "ingest (figure 1, figure 5a)",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": events,
        "partitions": run.partitions,
        "seed": seed,
        "batch_max_events": settings.batch_max_events,
        "batch_max_seconds": settings.batch_max_seconds,
        "worker_processes": args.workers,
        "event_loop": "uvloop" if args.uvloop else "asyncio",
        "load_average_before": os.getloadavg(),
        "machine": machine(),
        "servers": asyncio.run(server_versions(run.servers)),
    }
    console.print(f"preloading {events:,} events into {run.topic} ...")
    report["preload"] = asyncio.run(preload(run, events, seed))
    results: dict[str, Measured] = {}
    if "aiokafka" in only:
        console.print("plain aiokafka ...")
        results["aiokafka"] = run_ceiling(run, "aiokafka", events, timeout)
    if "faust_noop" in only:
        console.print("Faust do-nothing agent ...")
        results["faust_noop"] = run_ceiling(run, "faust-noop", events, timeout)
    if "worker" in only:
        console.print("worker (Postgres + Redis, exactly once) ...")
        asyncio.run(_create_database(run))
        results["worker"], busy = run_worker(run, events, timeout, args.workers)
        report["machine_cpu_cores_busy_during_worker"] = round(busy, 2)
        report["exact"] = asyncio.run(check_exact(run, events))
    report.update(figures(results))
    report["load_average_after"] = os.getloadavg()
    return report


if __name__ == "__main__":
    main()
