"""Figure 1 and 5a: ingest throughput, whole-stack CPU per event and worker memory (issue 10).

    python -m bench.ingest                      # both workloads, 1,000,000 events each
    python -m bench.ingest --also-two-workers --baseline-src /work/wt-baseline
    python -m bench.ingest --smoke              # a few thousand events per workload, for CI

For each workload (``--workload realtime|backfill|both``, ``cli.synthetic.WORKLOADS``:
timestamps over the last 5 minutes, or over the last 90 days), preloads ``--events``
synthetic interactions into a fresh topic, then drains it with one consumer group each,
every consumer in its own process:

1. plain aiokafka, counting only: the ceiling of Python on this broker;
2. the worker's Faust app (``streams.app.create_app``, same batch settings) with a
   do-nothing agent: the ceiling of Faust, which the worker is judged against;
3. the real worker (``python -m streams``), exactly once into Postgres and Redis, in a
   database of its own; afterwards the API (``python -m cli api``, the same checkout) must
   answer all-time totals that sum to the events, once from Redis and once from Postgres
   (a second API whose Redis is unreachable);
4. with ``--also-two-workers``: the same with two worker processes in one group;
5. with ``--custom-share S`` (issue 11): the real worker again, on a topic of the same events
   where a share S of them (e.g. 0.03) has a custom outcome type (``CUSTOM_TYPES``), counted
   per type besides the counters: the cost of custom types, in the same run;
6. with ``--baseline-src PATH``: the worker of another checkout (today's code, say), run with
   ``cwd=PATH`` and ``PYTHONPATH=PATH`` so that its own migrations make its own schema, over
   ``--baseline-events`` (a topic of its own when that differs from ``--events``).

A worker's rate runs from its first committed batch to its last (read from its /metrics at
2 Hz). Whole-stack CPU per counted event sums, over that window, the CPU (utime + stime from
/proc, threads and reaped children included) of the worker process(es), the Postgres server
(postmaster and every backend), the Redis server and the broker; the Faust no-op is charged
its own process and the broker's. Decay compares the rate over the first and the last
``--decay-window`` events counted. Nothing here asserts a timing: targets are reported as met
or not, in a table and in ``bench/results/ingest-<workload>[-<tag>].json``.

Servers come from KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL and REDIS_URL; those not set are
started embedded (``embedded.servers``). A server given from the environment is found in /proc by
the port it listens on (Postgres: else every ``postgres`` process); one in a container cannot
be seen, and its CPU is then missing from the figures (they say so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from bench import kafka, services
from bench.consumers import Measured
from bench.report import (
    RESULTS_DIR,
    SMOKE_DIR,
    Figure,
    Report,
    Target,
    make_console,
    peak_rss_mb,
    stack_cpu_seconds,
)
from cli.synthetic import WORKLOADS, encode, workload_events
from core.config import Settings
from embedded.isolation import database_dsn, delete_keys, drop_databases
from embedded.processes import clean_env, free_port
from embedded.servers import EmbeddedServers

TARGET_RATIO = 0.8  # worker / Faust no-op, same run
TARGET_CPU_US = 200.0  # whole stack, per counted event
TARGET_DECAY = 0.85  # rate over the last window / the first
TARGET_RSS_MB = 250.0
TARGET_TWO_WORKERS = 1.0  # two workers / one, same run
TARGET_CUSTOM_TYPES = 0.95  # issue 11: 3% custom-type events / none, same run
DECAY_WINDOW = 200_000
SMOKE_EVENTS = 5_000
SMOKE_BATCH = 500
POLL_SECONDS = 0.5  # /metrics costs the worker CPU: poll gently
SERVERS = ("postgres", "redis", "broker")


# --- the stack: servers and the processes that are each of them ----------------------------


@dataclass(frozen=True, slots=True)
class Stack:
    kafka: str
    database_url: str
    redis_url: str
    where: dict[str, str]
    # Root pids of each server (its tree is charged to it); empty when it cannot be seen.
    pids: dict[str, list[int]]


def find_stack(srv: EmbeddedServers) -> Stack:
    return Stack(
        srv.kafka_bootstrap,
        srv.database_url,
        srv.redis_url,
        services.describe(srv),
        services.server_pids(srv),
    )


# --- one run: names of everything it creates ------------------------------------------------


@dataclass
class Run:
    id: str
    stack: Stack
    partitions: int
    workdir: Path
    uvloop: bool = False
    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)  # worker settings, by env name

    def name(self, consumer: str) -> str:
        return f"{consumer}-{self.id}"

    def database_url(self, database: str) -> str:
        return database_dsn(self.stack.database_url, database)

    def env(self, topic: str, consumer: str, metrics_port: int = 0) -> dict[str, str]:
        """A consumer's environment: the worker's own settings, with this run's names."""
        name = self.name(consumer)
        database = f"bench_ingest_{name.replace('-', '_')}"
        group = f"bench-{name}"
        for kept, value in ((self.groups, group), (self.prefixes, f"bench-{name}")):
            if value not in kept:
                kept.append(value)
        return clean_env(**{
            "KAFKA_BOOTSTRAP_SERVERS": self.stack.kafka,
            "DATABASE_URL": self.database_url(database),
            "REDIS_URL": self.stack.redis_url,
            "INTERACTION_SUMMARY_TOPIC": topic,
            "INTERACTION_SUMMARY_DLQ_TOPIC": f"{topic}.dlq",
            "INTERACTION_SUMMARY_TOPIC_PARTITIONS": str(self.partitions),
            "INTERACTION_SUMMARY_CONSUMER_GROUP": group,
            "INTERACTION_SUMMARY_REDIS_PREFIX": f"bench-{name}",
            "INTERACTION_SUMMARY_WORKER_METRICS_PORT": str(metrics_port),
            "INTERACTION_SUMMARY_WORKER_DATA_DIR": str(self.workdir / consumer),
            **self.overrides,
        })  # fmt: skip


async def _create_database(run: Run, env: dict[str, str]) -> None:
    database = urlsplit(env["DATABASE_URL"]).path.lstrip("/")
    conn = await asyncpg.connect(run.stack.database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    run.databases.append(database)


async def _drop_databases(run: Run) -> None:
    await drop_databases(run.stack.database_url, run.databases)
    run.databases.clear()


async def _delete_keys(run: Run) -> None:
    while run.prefixes:
        await delete_keys(run.stack.redis_url, run.prefixes.pop())


async def _delete_topics(run: Run) -> None:
    leaders = [f"{group}-__assignor-__leader" for group in run.groups]
    names = [*run.topics, *(f"{t}.dlq" for t in run.topics), *leaders]
    run.topics.clear()
    run.groups.clear()
    await kafka.delete_topics(run.stack.kafka, names)


def clean_up(run: Run) -> None:
    """Drop the run's databases, Redis keys and topics (best effort: a leftover is harmless)."""
    for step in (_drop_databases, _delete_keys, _delete_topics):
        with contextlib.suppress(Exception):
            asyncio.run(step(run))


# --- preload --------------------------------------------------------------------------------


# Custom outcome types of --custom-share (a tenant's own types, as in issue 11).
CUSTOM_TYPES = ("applied", "quote_requested", "deferred", "callback_booked")


async def preload(
    run: Run, workload: str, events: int, seed: int, custom_share: float = 0.0
) -> tuple[str, dict[str, Any]]:
    """A fresh topic holding ``events`` interactions of ``workload``, stamped before now; a
    ``custom_share`` of them get a type from CUSTOM_TYPES instead of their own."""
    suffix = f"-custom{custom_share:g}" if custom_share else ""
    topic = f"bench-ingest-{run.id}-{workload}-{events}{suffix}"
    await kafka.create_topic(run.stack.kafka, topic, run.partitions)
    run.topics.append(topic)
    generator = workload_events(workload, seed, datetime.now(UTC))
    custom = random.Random(f"custom:{seed}")

    def messages() -> Iterator[tuple[bytes, bytes]]:
        left = events
        while left:
            chunk = generator.batch(min(left, 4096))
            left -= len(chunk)
            if custom_share:
                for event in chunk:
                    if custom.random() < custom_share:
                        event["type"] = custom.choice(CUSTOM_TYPES)
            yield from (encode(event) for event in chunk)

    started = time.perf_counter()
    sent = await kafka.preload(run.stack.kafka, topic, run.partitions, messages())
    seconds = time.perf_counter() - started
    return topic, {
        "events": sent,
        "seconds": round(seconds, 2),
        "events_per_second": round(sent / seconds),
    }


# --- the ceilings ---------------------------------------------------------------------------


def run_ceiling(
    run: Run, workload: str, kind: str, topic: str, events: int, timeout: float
) -> Measured:
    """``bench.consumers KIND`` in a child process (with the broker's CPU over its window)."""
    consumer = f"{workload}-{kind}"
    result = run.workdir / f"{consumer}.json"
    log_path = run.workdir / f"{consumer}.log"
    argv = [sys.executable, "-m", "bench.consumers", kind, "--events", str(events)]
    if run.uvloop:
        argv.append("--uvloop")
    if run.stack.pids["broker"]:
        argv += ["--watch", "broker=" + ",".join(map(str, run.stack.pids["broker"]))]
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            [*argv, "--result", str(result)],
            env=run.env(topic, consumer),
            stdout=log,
            stderr=log,
        ) as child,
    ):
        deadline = time.perf_counter() + timeout
        while child.poll() is None and not result.exists():
            if time.perf_counter() > deadline:
                child.kill()
                raise RuntimeError(f"{kind} did not read {events} events in {timeout:.0f}s")
            time.sleep(0.1)
        # Measured: its orderly shutdown (seconds, for Faust) would only make the run longer.
        if child.poll() is None:
            child.kill()
    if not result.exists():
        raise RuntimeError(f"{kind} exited {child.returncode} with no result:\n{_tail(log_path)}")
    return Measured(**json.loads(result.read_text()))


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the worker -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    done: int
    cpu: dict[str, float]  # worker, postgres, redis, broker: CPU seconds so far


@dataclass
class WorkerRun:
    """One worker variant's drain: its progress samples and what was checked after."""

    label: str
    processes: int
    events: int
    src: str | None
    commit: str | None
    started: float
    samples: list[Sample]
    peak_rss_mb: list[float]
    exact: dict[str, Any] = field(default_factory=dict)
    # Share of backend samples in each state (``_BackendStates``) during the drain.
    postgres_backends: dict[str, float] = field(default_factory=dict)

    @property
    def first(self) -> Sample:
        return next(s for s in self.samples if s.done > 0)

    @property
    def last(self) -> Sample:
        return self.samples[-1]

    @property
    def counted(self) -> int:
        return self.last.done - self.first.done

    @property
    def seconds(self) -> float:
        return self.last.at - self.first.at

    @property
    def rate(self) -> float:
        return self.counted / self.seconds if self.seconds > 0 else 0.0

    def cpu_us(self) -> dict[str, float]:
        """CPU per counted event, µs, by process (and ``stack``, their sum)."""
        if not self.counted:
            return {}
        per = {
            name: (self.last.cpu[name] - self.first.cpu[name]) / self.counted * 1e6
            for name in self.last.cpu
        }
        return {**per, "stack": sum(per.values())}

    def window(self, low: int, high: int) -> dict[str, Any]:
        """Rate and whole-stack CPU/event while the counter went from ``low`` to ``high``."""
        (t0, cpu0), (t1, cpu1) = _when(self.samples, low), _when(self.samples, high)
        seconds, events = t1 - t0, high - low
        return {
            "from_event": low,
            "to_event": high,
            "seconds": round(seconds, 2),
            "events_per_second": round(events / seconds) if seconds > 0 else None,
            "cpu_us_per_event": (sum(cpu1.values()) - sum(cpu0.values())) / events * 1e6,
        }

    def decay(self, width: int) -> dict[str, Any] | None:
        """The rate over the first and the last ``width`` events counted, and their ratio."""
        if width <= 0 or self.counted < width or len(self.samples) < 4:
            return None
        first = self.window(self.first.done, self.first.done + width)
        last = self.window(self.last.done - width, self.last.done)
        ratio = (
            last["events_per_second"] / first["events_per_second"]
            if first["events_per_second"] and last["events_per_second"]
            else None
        )
        return {"window_events": width, "first": first, "last": last, "ratio": ratio}


def _when(samples: list[Sample], done: int) -> tuple[float, dict[str, float]]:
    """Time and CPU when the counter reached ``done``, interpolated between two samples."""
    for before, after in itertools.pairwise(samples):
        if after.done >= done:
            span = after.done - before.done
            f = (done - before.done) / span if span else 1.0
            f = min(1.0, max(0.0, f))
            at = before.at + f * (after.at - before.at)
            cpu = {n: before.cpu[n] + f * (after.cpu[n] - before.cpu[n]) for n in after.cpu}
            return at, cpu
    return samples[-1].at, samples[-1].cpu


def _worker_done(metrics_url: str) -> int | None:
    """Events a worker has finished with (counted, duplicate or dead-lettered)."""
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


def _source_env(env: dict[str, str], src: Path | None) -> dict[str, str]:
    """``env`` for a command of the checkout at ``src`` (None: this one)."""
    if src is None:
        return env
    return {**env, "PYTHONPATH": str(src)}


def run_worker(
    run: Run,
    workload: str,
    label: str,
    topic: str,
    events: int,
    timeout: float,
    processes: int = 1,
    src: Path | None = None,
) -> WorkerRun:
    """``python -m streams`` (``processes`` of them, one group) until ``events`` are done,
    then the exactly-once check through the API of the same checkout."""
    consumer = f"{workload}-{label}"
    env = run.env(topic, consumer)
    asyncio.run(_create_database(run, env))
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        children: list[tuple[subprocess.Popen[bytes], str]] = []
        for index in range(processes):
            port = free_port()
            log = stack.enter_context((run.workdir / f"{consumer}-{index}.log").open("wb"))
            argv = [sys.executable, "-m", "streams"]
            if run.uvloop:  # what `python -m streams` would do with uvloop enabled first
                argv[1:] = ["-c", _UVLOOP_WORKER]
            worker_env = _source_env(
                {**env, "INTERACTION_SUMMARY_WORKER_METRICS_PORT": str(port)}, src
            )
            child = subprocess.Popen(argv, env=worker_env, cwd=src, stdout=log, stderr=log)
            stack.callback(_stop, child)
            children.append((child, f"http://127.0.0.1:{port}/metrics"))
        groups = {"worker": [child.pid for child, _ in children]}
        groups.update({name: run.stack.pids[name] for name in SERVERS})
        backends = _BackendStates(env["DATABASE_URL"])
        stack.callback(backends.close)
        samples = _watch_workers(children, groups, events, timeout, backends)
        peaks = [round(peak_rss_mb(child.pid), 1) for child, _ in children]
    measured = WorkerRun(
        label, processes, events, str(src) if src else None, _commit(src), started, samples, peaks
    )
    measured.postgres_backends = backends.shares()
    checked = time.perf_counter()
    measured.exact = check_exact(run, env, events, src)
    measured.exact["check_seconds"] = round(time.perf_counter() - checked, 1)
    # A 1M-event database is gigabytes, its Redis keys hundreds of MB: free them now.
    asyncio.run(_drop_databases(run))
    asyncio.run(_delete_keys(run))
    return measured


_UVLOOP_WORKER = (
    "from bench.consumers import use_uvloop; use_uvloop(); "
    "from streams.app import run_worker; run_worker()"
)


def _commit(src: Path | None) -> str | None:
    if src is None:
        from bench.report import git_commit

        return git_commit()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    return None


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


class _BackendStates:
    """What the run database's client backends are doing, counted over the samples taken.

    ``running``, a wait (``Lock:transactionid``: a row another transaction holds,
    ``IO:WALSync``...), ``idle`` (waiting for the worker) or ``idle in transaction``: where
    the write path spends its time on the Postgres side, from ``pg_stat_activity``.
    """

    _QUERY = """
        SELECT CASE WHEN state = 'active'
                    THEN coalesce(wait_event_type || ':' || wait_event, 'running')
                    ELSE coalesce(state, 'unknown') END AS what,
               count(*) AS backends
        FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type = 'client backend'
        GROUP BY 1"""

    def __init__(self, database_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None
        self._url = database_url
        self.counts: dict[str, int] = {}

    def sample(self) -> None:
        with contextlib.suppress(Exception):  # diagnostics only: never fail the run on them
            if self._conn is None:
                self._conn = self._loop.run_until_complete(asyncpg.connect(self._url))
            for row in self._loop.run_until_complete(self._conn.fetch(self._QUERY)):
                self.counts[row["what"]] = self.counts.get(row["what"], 0) + row["backends"]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._conn.close())
        self._loop.close()

    def shares(self) -> dict[str, float]:
        total = sum(self.counts.values())
        ordered = sorted(self.counts.items(), key=lambda kv: -kv[1])
        return {what: round(n / total, 3) for what, n in ordered} if total else {}


def _watch_workers(
    children: list[tuple[subprocess.Popen[bytes], str]],
    groups: dict[str, list[int]],
    events: int,
    timeout: float,
    backends: _BackendStates,
) -> list[Sample]:
    """Progress and the stack's CPU at ~2 Hz, from before the first batch to the last."""
    deadline = time.perf_counter() + timeout
    samples: list[Sample] = []
    while True:
        for child, _ in children:
            if child.poll() is not None:
                raise RuntimeError(f"a worker exited with code {child.returncode}")
        done = sum(_worker_done(url) or 0 for _, url in children)
        sample = Sample(time.perf_counter(), done, stack_cpu_seconds(groups))
        # Keep the last sample before the first batch (it bounds the first window) and all after.
        if done == 0 and samples and samples[-1].done == 0:
            samples[-1] = sample
        else:
            samples.append(sample)
        if done >= events:
            return samples
        if done:
            backends.sample()
        if sample.at > deadline:
            raise RuntimeError(f"the workers finished {done} of {events} events in {timeout:.0f}s")
        time.sleep(POLL_SECONDS)


# --- exactly once, as the API answers it ----------------------------------------------------


def check_exact(run: Run, env: dict[str, str], events: int, src: Path | None) -> dict[str, Any]:
    """The checkout's API answers all-time action totals summing to ``events``: from Redis
    (once the worker's Redis step caught up), and from Postgres (an API whose Redis is down).

    Through the API, not the tables: the schema is what issue 10 changes, the answers are not.
    """
    api_env = _source_env(env, src)
    key = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--role", "viewer", "--label", "bench"],
        env=api_env, cwd=src, capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()[-1]  # fmt: skip
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with contextlib.ExitStack() as stack:
        urls = []
        for name, redis_url in (("redis", env["REDIS_URL"]), ("postgres", dead_redis)):
            port = free_port()
            log = stack.enter_context((run.workdir / f"api-{name}.log").open("wb"))
            child = subprocess.Popen(
                [sys.executable, "-m", "cli", "api", "--port", str(port), "--log-level", "warning"],
                env={**api_env, "REDIS_URL": redis_url}, cwd=src, stdout=log, stderr=log,
            )  # fmt: skip
            stack.callback(_stop, child)
            urls.append(f"http://127.0.0.1:{port}")
        return asyncio.run(_api_totals(urls[0], urls[1], key, events))


async def _api_totals(redis_api: str, postgres_api: str, key: str, events: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        deadline = time.monotonic() + 120
        redis_total, redis_sources = await _alltime_total(http, redis_api, deadline)
        # The worker applies a committed batch to Redis just after: wait (bounded) for it.
        while redis_total != events and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            redis_total, redis_sources = await _alltime_total(http, redis_api, deadline)
        postgres_total, postgres_sources = await _alltime_total(http, postgres_api, deadline)
    return {
        "redis_total": redis_total,
        "redis_answered_by": sorted(redis_sources),
        "postgres_total": postgres_total,
        "postgres_answered_by": sorted(postgres_sources),
        "exact": redis_total == postgres_total == events
        and redis_sources == {"redis"}
        and postgres_sources == {"postgres"},
    }


async def _alltime_total(
    http: httpx.AsyncClient, base: str, deadline: float
) -> tuple[int, set[str]]:
    """Sum of every action's all-time total, paging; waits for the API to answer at all."""
    total, sources, offset = 0, set[str](), 0
    while True:
        params: dict[str, str | int] = {
            "groupBy": "action",
            "days": 36_500,
            "limit": 500,
            "offset": offset,
        }
        try:
            response = await http.get(f"{base}/api/v1/interaction-summary", params=params)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # still starting
            continue
        response.raise_for_status()
        body = response.json()
        total += sum(row["total"] for row in body["summary"])
        sources.add(body["source"])
        offset += len(body["summary"])
        if not body["summary"] or offset >= body["total"]:
            return total, sources


# --- figures --------------------------------------------------------------------------------


@dataclass
class WorkloadResult:
    workload: str
    events: int
    preload: dict[str, Any]
    ceilings: dict[str, Measured] = field(default_factory=dict)
    workers: dict[str, WorkerRun] = field(default_factory=dict)
    baseline_preload: dict[str, Any] | None = None
    custom_preload: dict[str, Any] | None = None
    load_average_before: tuple[float, ...] = ()
    load_average_after: tuple[float, ...] = ()


def _timed(measured: Measured) -> bool:
    """Whether the run lasted long enough for a rate (a tiny topic fits in one fetch)."""
    return measured.seconds >= 0.05 and measured.events > 0


def _ceiling_cpu_us(measured: Measured) -> dict[str, float]:
    if not measured.events:
        return {}
    per = {"consumer": measured.cpu_seconds / measured.events * 1e6}
    per.update({n: s / measured.events * 1e6 for n, s in measured.watched_cpu_seconds.items()})
    return {**per, "stack": sum(per.values())}


def _ceiling_row(measured: Measured) -> dict[str, Any]:
    timed = _timed(measured)
    return {
        "events": measured.events,
        "seconds": round(measured.seconds, 2),
        "events_per_second": round(measured.rate) if timed else None,
        "seconds_to_first_message": round(measured.startup_seconds, 2),
        "cpu_cores": round(measured.cpu_seconds / measured.seconds, 2) if timed else None,
        "cpu_us_per_event": {k: round(v, 1) for k, v in _ceiling_cpu_us(measured).items()},
        "peak_rss_mb": round(measured.peak_rss_mb, 1),
    }


def _worker_row(w: WorkerRun, decay_width: int) -> dict[str, Any]:
    cores = {
        name: round((w.last.cpu[name] - w.first.cpu[name]) / w.seconds, 2) if w.seconds else None
        for name in w.last.cpu
    }
    return {
        "processes": w.processes,
        "src": w.src,
        "commit": w.commit,
        "events": w.counted,
        "seconds": round(w.seconds, 2),
        "events_per_second": round(w.rate) if w.seconds >= 0.05 else None,
        "seconds_to_first_batch": round(w.first.at - w.started, 2),
        "cpu_cores": cores,
        "cpu_us_per_event": {k: round(v, 1) for k, v in w.cpu_us().items()},
        "peak_rss_mb": w.peak_rss_mb,
        "decay": w.decay(decay_width),
        "exact": w.exact,
        "postgres_backends_sampled": w.postgres_backends,
        "progress": [[round(s.at - w.started, 2), s.done] for s in w.samples],
    }


def _decay_width(counted: int, asked: int | None) -> int:
    """``asked``, else 200,000 when the run has room for two such windows, else a fifth."""
    if asked:
        return asked
    return DECAY_WINDOW if counted >= 4 * DECAY_WINDOW else counted // 5


def _shares(cpu: dict[str, float]) -> str:
    return " + ".join(f"{n} {v:.0f}" for n, v in cpu.items() if n != "stack")


def build_report(
    result: WorkloadResult, run: Run, args: argparse.Namespace, stack: Stack, tag: str
) -> Report:
    name = f"ingest-{result.workload}" + (f"-{tag}" if tag else "")
    report = Report(name, args.smoke)
    settings = Settings()
    worker = result.workers.get("worker")
    width = _decay_width(worker.counted if worker else 0, args.decay_window)
    report.parameters = {
        "workload": result.workload,
        "workload_description": WORKLOADS[result.workload].description,
        "events": result.events,
        "partitions": run.partitions,
        "seed": args.seed,
        "batch_max_events": int(
            run.overrides.get("INTERACTION_SUMMARY_BATCH_MAX_EVENTS", settings.batch_max_events)
        ),
        "event_loop": "uvloop" if run.uvloop else "asyncio",
        "decay_window_events": width,
        "baseline_src": args.baseline_src and str(args.baseline_src),
        "baseline_events": args.baseline_events if args.baseline_src else None,
    }
    report.servers = {
        "where": stack.where,
        "pids_found": {n: bool(p) for n, p in stack.pids.items()},
    }
    with contextlib.suppress(Exception):
        report.servers.update(
            asyncio.run(services.server_versions(stack.database_url, stack.redis_url))
        )
    report.details = {
        "preload": result.preload,
        "baseline_preload": result.baseline_preload,
        "custom_preload": result.custom_preload,
        "load_average_before": result.load_average_before,
        "load_average_after": result.load_average_after,
        "ceilings": {n: _ceiling_row(m) for n, m in result.ceilings.items()},
        "workers": {n: _worker_row(w, width) for n, w in result.workers.items()},
    }
    unseen = [n for n, p in stack.pids.items() if not p]
    missing = f" (CPU of {', '.join(unseen)} not seen: not counted)" if unseen else ""

    aiokafka = result.ceilings.get("aiokafka")
    noop = result.ceilings.get("faust_noop")
    if aiokafka and _timed(aiokafka):
        report.add(Figure("plain aiokafka (ceiling)", aiokafka.rate, "events/s"))
    noop_rate = noop.rate if noop and _timed(noop) else None
    noop_cpu = _ceiling_cpu_us(noop).get("stack") if noop else None
    if noop and noop_rate:
        report.add(
            Figure("Faust no-op agent (ceiling)", noop_rate, "events/s",
                   aiokafka.rate if aiokafka and _timed(aiokafka) else None, "plain aiokafka")
        )  # fmt: skip
        report.add(
            Figure("Faust no-op: CPU per event, its process + broker", noop_cpu or 0.0,
                   "µs/event", note=_shares(_ceiling_cpu_us(noop)))
        )  # fmt: skip
    custom = [
        (k, f"worker, {k[6:-3]}% custom types") for k in result.workers if k.startswith("custom")
    ]
    for key, label in (("worker", "worker"), ("workers2", "two workers"), *custom,
                       ("baseline", "baseline worker")):  # fmt: skip
        w = result.workers.get(key)
        if w is None or w.seconds < 0.05:
            continue
        exact = "exact" if w.exact.get("exact") else f"NOT EXACT {w.exact}"
        what = f"{w.counted:,} events, {exact}" + (f", code {w.commit}" if w.commit else "")
        if key == "baseline":
            what += f", {w.src}"
        ceiling: float | None
        if key == "workers2" and worker and worker.seconds >= 0.05:
            ceiling, ceiling_name = worker.rate, "one worker, same run"
            targets: tuple[Target, ...] = (Target(">=", TARGET_TWO_WORKERS, of="ratio"),)
        elif key.startswith("custom") and worker and worker.seconds >= 0.05:
            ceiling, ceiling_name = worker.rate, "worker without custom types, same run"
            targets = (Target(">=", TARGET_CUSTOM_TYPES, of="ratio"),)
        else:
            ceiling, ceiling_name = noop_rate, "Faust no-op, same run"
            targets = (Target(">=", TARGET_RATIO, of="ratio"),) if key != "baseline" else ()
        report.add(Figure(f"{label}: events/s", w.rate, "events/s", ceiling, ceiling_name,
                          targets, note=what))  # fmt: skip
        cpu = w.cpu_us()
        note = _shares(cpu) + missing
        if key == "baseline" and worker and worker.cpu_us():
            note += f"; the worker under test uses {worker.cpu_us()['stack'] / cpu['stack']:.2f}x"
        report.add(
            Figure(f"{label}: whole-stack CPU per event", cpu["stack"], "µs/event",
                   targets=(Target("<=", TARGET_CPU_US),) if key != "baseline" else (),
                   note=note)
        )  # fmt: skip
        decay = w.decay(_decay_width(w.counted, args.decay_window))
        if decay and decay["ratio"]:
            first, last = decay["first"], decay["last"]
            report.add(
                Figure(
                    f"{label}: rate over last / first {decay['window_events']:,} events",
                    decay["ratio"], "x",
                    targets=(Target(">=", TARGET_DECAY),) if key != "baseline" else (),
                    note=f"first {first['events_per_second']:,}/s"
                    f" ({first['cpu_us_per_event']:.0f} µs), last {last['events_per_second']:,}/s"
                    f" ({last['cpu_us_per_event']:.0f} µs)",
                )
            )  # fmt: skip
        report.add(
            Figure(f"{label}: peak RSS", max(w.peak_rss_mb), "MB",
                   targets=(Target("<", TARGET_RSS_MB),) if key != "baseline" else (),
                   note=", ".join(f"{m:.0f}" for m in w.peak_rss_mb) if w.processes > 1 else "")
        )  # fmt: skip
    return report


def print_summary(result: WorkloadResult, console: Console, decay_window: int | None) -> None:
    """One line per consumer: rate, CPU per event by process, RSS, decay."""
    table = Table(title=f"{result.workload}: CPU per counted event by process (µs)")
    columns = ("consumer", "events", "events/s", "stack", "consumer/worker", "postgres",
               "redis", "broker", "peak RSS MB", "last/first")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "consumer" else "right")

    def us(cpu: dict[str, float], name: str) -> str:
        return f"{cpu[name]:.0f}" if name in cpu else "-"

    for name, m in result.ceilings.items():
        cpu = _ceiling_cpu_us(m)
        rate = f"{m.rate:,.0f}" if _timed(m) else "n/a"
        table.add_row(name, f"{m.events:,}", rate, us(cpu, "stack"), us(cpu, "consumer"),
                      "-", "-", us(cpu, "broker"), f"{m.peak_rss_mb:.0f}", "-")  # fmt: skip
    for name, w in result.workers.items():
        cpu = w.cpu_us()
        decay = w.decay(_decay_width(w.counted, decay_window))
        ratio = f"{decay['ratio']:.2f}" if decay and decay["ratio"] else "-"
        label = f"{name} ({w.commit})" if w.commit else name
        table.add_row(label, f"{w.counted:,}", f"{w.rate:,.0f}", us(cpu, "stack"),
                      us(cpu, "worker"), us(cpu, "postgres"), us(cpu, "redis"), us(cpu, "broker"),
                      "/".join(f"{m:.0f}" for m in w.peak_rss_mb), ratio)  # fmt: skip
    console.print(table)
    for name, w in result.workers.items():
        top = ", ".join(
            f"{what} {share:.0%}" for what, share in list(w.postgres_backends.items())[:5]
        )
        console.print(f"{name}: Postgres client backends sampled: {top or 'no samples'}")


# --- main -----------------------------------------------------------------------------------


def run_custom_types(
    run: Run,
    workload: str,
    events: int,
    args: argparse.Namespace,
    result: WorkloadResult,
    step: Callable[[str], None],
) -> None:
    """The worker on the same events with ``--custom-share`` of them of custom types."""
    label = f"custom{round(100 * args.custom_share)}pct"
    step(f"preloading {events:,} events, {args.custom_share:.0%} of custom types")
    custom_topic, result.custom_preload = asyncio.run(
        preload(run, workload, events, args.seed, args.custom_share)
    )
    step(f"{label}: {args.workers} worker process(es), exactly once")
    result.workers[label] = run_worker(
        run, workload, label, custom_topic, events, args.timeout, args.workers
    )


def measure_workload(
    run: Run, workload: str, events: int, args: argparse.Namespace, console: Console
) -> WorkloadResult:
    only, timeout = args.only.split(","), args.timeout
    began = time.perf_counter()

    def step(what: str) -> None:
        console.print(f"[dim]{time.perf_counter() - began:6.1f}s[/] {workload}: {what} ...")

    step(f"preloading {events:,} events")
    topic, loaded = asyncio.run(preload(run, workload, events, args.seed))
    result = WorkloadResult(workload, events, loaded, load_average_before=os.getloadavg())
    if "aiokafka" in only:
        step("plain aiokafka")
        result.ceilings["aiokafka"] = run_ceiling(run, workload, "aiokafka", topic, events, timeout)
    if "faust_noop" in only:
        step("Faust do-nothing agent")
        result.ceilings["faust_noop"] = run_ceiling(
            run, workload, "faust-noop", topic, events, timeout
        )
    variants = []
    if "worker" in only:
        variants.append(("worker", args.workers))
    if args.also_two_workers:
        variants.append(("workers2", 2))
    if args.custom_share and args.custom_first:  # the other order, against warm-up effects
        run_custom_types(run, workload, events, args, result, step)
    for label, processes in variants:
        step(f"{label}: {processes} worker process(es), exactly once")
        result.workers[label] = run_worker(run, workload, label, topic, events, timeout, processes)
    if args.custom_share and not args.custom_first:
        run_custom_types(run, workload, events, args, result, step)
    if args.baseline_src:
        baseline_events = args.baseline_events or events
        baseline_topic = topic
        if baseline_events != events:
            step(f"preloading {baseline_events:,} events for the baseline")
            baseline_topic, result.baseline_preload = asyncio.run(
                preload(run, workload, baseline_events, args.seed)
            )
        step(f"baseline worker from {args.baseline_src}")
        result.workers["baseline"] = run_worker(
            run,
            workload,
            "baseline",
            baseline_topic,
            baseline_events,
            timeout,
            1,
            args.baseline_src,
        )
    result.load_average_after = os.getloadavg()
    asyncio.run(_delete_topics(run))  # the broker keeps topics in memory: free them now
    step("done")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--events", type=int, default=1_000_000, help="per workload")
    parser.add_argument("--workload", choices=(*WORKLOADS, "both"), default="both")
    parser.add_argument(
        "--smoke", action="store_true",
        help=f"{SMOKE_EVENTS:,} events per workload, results under bench/results/smoke/",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated subset of aiokafka,faust_noop,worker"
                        " (default all; smoke: no aiokafka, whose tiny drain is one fetch)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the group")
    parser.add_argument(
        "--also-two-workers", action="store_true",
        help="also run two worker processes in one group (issue 10: never slower than one)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline-src", type=Path,
        help="also run the worker of this checkout (e.g. `git worktree add /work/wt-baseline"
        " 85c8524`), with its own schema, in its own database",
    )  # fmt: skip
    parser.add_argument(
        "--custom-share", type=float, default=0.0,
        help="also run the worker on the same events with this share of custom outcome types",
    )  # fmt: skip
    parser.add_argument(
        "--custom-first", action="store_true",
        help="run the --custom-share worker before the plain one (the other order)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline-events", type=int, help="events for the baseline worker (default --events)"
    )
    parser.add_argument(
        "--decay-window", type=int,
        help=f"events per decay window (default {DECAY_WINDOW:,}, or a fifth of a smaller run)",
    )  # fmt: skip
    parser.add_argument("--tag", default="", help="results file suffix: ingest-<workload>-<tag>")
    parser.add_argument("--output-dir", type=Path, help="default bench/results/ (smoke: smoke/)")
    parser.add_argument(
        "--asyncio",
        dest="uvloop",
        action="store_false",
        help="run the Faust ceilings on asyncio's own loop (the worker runs on uvloop since"
        " issue 10, so by default the ceilings do too)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per consumer, seconds")
    args = parser.parse_args(argv)
    if args.only is None:
        args.only = "faust_noop,worker" if args.smoke else "aiokafka,faust_noop,worker"
    if args.smoke:
        args.events = SMOKE_EVENTS
        args.baseline_events = args.baseline_events and min(args.baseline_events, SMOKE_EVENTS)
    if args.baseline_src:
        args.baseline_src = args.baseline_src.resolve()
        if not (args.baseline_src / "streams" / "__main__.py").exists():
            parser.error(f"--baseline-src {args.baseline_src}: no streams/__main__.py there")
    workloads = list(WORKLOADS) if args.workload == "both" else [args.workload]
    output_dir = args.output_dir or (SMOKE_DIR if args.smoke else RESULTS_DIR)
    console = make_console()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    written = []
    with services.servers(kafka=True, state_dir=workdir / "servers") as srv:
        stack = find_stack(srv)
        run = Run(f"{int(time.time())}-{os.getpid()}", stack, Settings().topic_partitions,
                  workdir, args.uvloop)  # fmt: skip
        if args.smoke:  # several batches even from a few thousand events
            run.overrides["INTERACTION_SUMMARY_BATCH_MAX_EVENTS"] = str(SMOKE_BATCH)
        try:
            for workload in workloads:
                result = measure_workload(run, workload, args.events, args, console)
                report = build_report(result, run, args, stack, args.tag)
                path = report.write(output_dir / f"{report.name}.json")
                print_summary(result, console, args.decay_window)
                report.show(console, path)
                written.append(path)
        except BaseException:
            console.print(f"[red]failed[/]: logs kept in {workdir}")
            raise
        finally:
            clean_up(run)
    shutil.rmtree(workdir, ignore_errors=True)
    if args.baseline_src and args.baseline_events and args.baseline_events != args.events:
        console.print(
            f"note: the baseline worker drained {args.baseline_events:,} events, not"
            f" {args.events:,}: its tables stayed smaller, so its rate and decay flatter it"
        )


if __name__ == "__main__":
    main()
