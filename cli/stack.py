"""``interaction-summary up``: the whole stack in the foreground, from wheels only.

Order: broker, Postgres, Redis (each skipped when its URL is given by environment), topics,
schema and a viewer key, then the worker, the API and, with ``--demo``, a catalog, the last
30 days of synthetic history (so periods, rolling windows and the events-per-day chart show a
living month on first look) and a live synthetic producer. ``stack.json`` in the state directory tells scripts where everything is.
Shutdown (Ctrl-C or SIGTERM) runs in reverse order; every child also dies with this process.
With the embedded broker (it keeps its log in memory), the shutdown first stops the demo
producer, then waits for the worker to count what the topic still holds (a second Ctrl-C
stops waiting and says how many events are left), and stops the broker last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from core.config import Settings, get_settings
from embedded import servers as embedded
from embedded.processes import (
    Process,
    answers_health,
    cli_argv,
    free_port,
    service_env,
    wait_ready,
)
from streams.topics import ensure_topics, service_topics

DATABASE_NAME = "interaction_summary"
# How long a shutdown waits for the worker to count what the embedded broker still holds.
DRAIN_SECONDS = float(os.environ.get("INTERACTION_SUMMARY_UP_DRAIN_SECONDS", "300"))
DEFAULT_PORTS = {"kafka": 9092, "postgres": 5432, "redis": 6379, "api": 8000, "metrics": 9108}


@dataclass(frozen=True)
class StackOptions:
    state_dir: Path
    demo: bool = False
    demo_rate: float = 200.0
    api_port: int = DEFAULT_PORTS["api"]
    demo_history_events: int = 30_000


@dataclass
class Stack:
    """What ``up`` started, in start order, and what it tells scripts in ``stack.json``."""

    options: StackOptions
    console: Console
    processes: list[Process] = field(default_factory=list)
    settings: Settings | None = None
    info: dict[str, str] = field(default_factory=dict)

    @property
    def stack_file(self) -> Path:
        return self.options.state_dir / "stack.json"

    @property
    def logs(self) -> Path:
        return self.options.state_dir / "logs"

    def step(self, what: str, start: Callable[[], str]) -> None:
        """Run one start-up step under a spinner, then print its result and duration."""
        began = time.monotonic()
        with self.console.status(f"{what}..."):
            result = start()
        took = time.monotonic() - began
        self.console.print(f"[green]✓[/] {what:<22} {result} [dim]{took:.1f}s[/]", soft_wrap=True)

    # --- start-up ------------------------------------------------------------------------

    def running_elsewhere(self) -> int | None:
        """The pid of another live ``up`` on this state directory, if there is one."""
        try:
            pid = int(json.loads(self.stack_file.read_text())["pid"])
            os.kill(pid, 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pid if pid != os.getpid() else None

    def start(self) -> None:
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        base = get_settings()
        urls = {
            "kafka": os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
            "postgres": os.environ.get("DATABASE_URL"),
            "redis": os.environ.get("REDIS_URL"),
        }
        self.step("Kafka broker", lambda: self._server("kafka", urls))
        self.step("Postgres", lambda: self._server("postgres", urls))
        self.step("Redis", lambda: self._server("redis", urls))
        settings = Settings(
            **{
                **base.model_dump(),
                "kafka_bootstrap_servers": urls["kafka"],
                "database_url": urls["postgres"],
                "redis_url": urls["redis"],
                "worker_data_dir": self.options.state_dir / "worker",
                "worker_metrics_port": free_port(DEFAULT_PORTS["metrics"]),
                "api_port": free_port(self.options.api_port),
            }
        )
        self.settings = settings
        self.step("Topics", lambda: self._topics(settings))
        self.step("Schema and viewer key", lambda: self._schema_and_key(settings))
        if self.options.demo:
            self.step("Demo catalog", lambda: asyncio.run(_load_demo_catalog(settings)))
        self.step("Worker", lambda: self._service("worker", ["worker"], settings))
        self.step("API", lambda: self._api(settings))
        if self.options.demo:
            events = self.options.demo_history_events
            self.step(
                f"Demo history ({DEMO_HISTORY_DAYS} d)",
                lambda: asyncio.run(_publish_demo_history(settings, events)),
            )
            rate = self.options.demo_rate
            argv = ["produce", "--rate", f"{rate:g}", "--quiet"]
            self.step(
                "Demo producer", lambda: self._service("producer", argv, settings, f"{rate:g}/s")
            )
        self._write_stack_file()

    def _server(self, name: str, urls: dict[str, str | None]) -> str:
        given = urls[name]
        if given:
            return f"{_redact(given)} [dim](from environment, not started)[/]"
        port = free_port(DEFAULT_PORTS[name])
        log = self.logs / f"{name}.log"
        if name == "kafka":
            server = embedded.start_kafka(port, log)
            urls[name] = server.url
        elif name == "postgres":
            server = embedded.start_postgres(self.options.state_dir / "postgres", port, log)
            urls[name] = asyncio.run(_ensure_database(server.url, DATABASE_NAME))
        else:
            server = embedded.start_redis(port, log)
            urls[name] = server.url
        self.processes.append(server)
        return f"{urls[name]} [dim](embedded)[/]"

    def _topics(self, settings: Settings) -> str:
        created = asyncio.run(
            ensure_topics(settings.kafka_bootstrap_servers, service_topics(settings))
        )
        topics = f"{settings.topic} ({settings.topic_partitions} partitions), {settings.dlq_topic}"
        return topics + ("" if created else " [dim](existed)[/]")

    def _schema_and_key(self, settings: Settings) -> str:
        applied, key = asyncio.run(_migrate_and_create_key(settings))
        self.info["api_key"] = key
        return f"{len(applied)} migration(s) applied, viewer key {key[:10]}…"

    def _service(self, name: str, args: list[str], settings: Settings, note: str = "") -> str:
        log = self.logs / f"{name}.log"
        process = Process(name, cli_argv(*args), log, env=service_env(settings), url=note).start()
        self.processes.append(process)
        return note or f"pid {process.pid}"

    def _api(self, settings: Settings) -> str:
        url = f"http://{settings.api_host}:{settings.api_port}"
        self._service("api", ["api", "--log-level", "warning"], settings)
        api = self.processes[-1]
        wait_ready(api, lambda: answers_health(url), timeout=60)
        self.info["api_url"] = url
        return f"{url}  [dim](docs /docs, dashboard /dashboard)[/]"

    def _write_stack_file(self) -> None:
        assert self.settings is not None
        api_url = self.info["api_url"]
        document = {
            "kafka_bootstrap": self.settings.kafka_bootstrap_servers,
            "database_url": self.settings.database_url,
            "redis_url": self.settings.redis_url,
            "api_url": api_url,
            "dashboard_url": f"{api_url}/dashboard",
            "api_key": self.info["api_key"],
            "topic": self.settings.topic,
            "worker_metrics_url": f"http://127.0.0.1:{self.settings.worker_metrics_port}/metrics",
            "pid": os.getpid(),
        }
        partial = self.stack_file.with_suffix(".json.tmp")
        partial.write_text(json.dumps(document, indent=2) + "\n")
        partial.chmod(0o600)  # it holds a key
        partial.replace(self.stack_file)

    # --- running -------------------------------------------------------------------------

    def watch(self) -> int:
        """Show live status until a signal (exit 0) or until a part dies (exit 1)."""
        assert self.settings is not None
        metrics_url = f"http://127.0.0.1:{self.settings.worker_metrics_port}/metrics"
        self.console.print(
            f"\n[bold]Stack is up.[/] Addresses and a viewer key: {self.stack_file}\n"
            f"Logs: {self.logs}/\n"
            f'Try: curl -H "Authorization: Bearer $(jq -r .api_key {self.stack_file})" '
            f"'{self.info['api_url']}/api/v1/interaction-summary?days=1&limit=3'\n"
            "Ctrl-C stops everything.\n",
            soft_wrap=True,
        )
        with Live(self._table({}), console=self.console, refresh_per_second=2) as live:
            while True:
                dead = [p for p in self.processes if not p.running]
                if dead:
                    live.stop()
                    for process in dead:
                        self.console.print(
                            f"[red]✗ {process.name} exited with code {process.returncode}[/];"
                            f" last lines of {process.log_path}:\n{process.log_tail(30)}"
                        )
                    return 1
                live.update(self._table(_scrape(metrics_url)))
                time.sleep(1.0)

    def _table(self, metrics: dict[str, float]) -> Table:
        table = Table(title="interaction-summary", show_header=True, header_style="bold")
        table.add_column("part")
        table.add_column("state")
        table.add_column("address / pid")
        for process in self.processes:
            state = "[green]running[/]" if process.running else "[red]stopped[/]"
            table.add_row(process.name, state, process.url or str(process.pid))
        numbers = (
            f"in {metrics.get('interactions_in_total', 0):,.0f}  "
            f"counted {metrics.get('interactions_counted_total', 0):,.0f}  "
            f"duplicates {metrics.get('interactions_duplicate_total', 0):,.0f}  "
            f"rejected {metrics.get('interactions_rejected_total', 0):,.0f}  "
            f"lag {metrics.get('interactions_consumer_lag', 0):,.0f}"
        )
        table.caption = f"worker since start: {numbers}"
        return table

    # --- shutdown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything, last started first; remove ``stack.json`` (it would point nowhere).

        With the embedded broker, what ``up`` itself produces stops first, then the worker
        counts what the topic still holds before anything else stops.
        """
        self.stack_file.unlink(missing_ok=True)
        producers = [p for p in self.processes if p.name == "producer"]
        for process in [*producers, *reversed([p for p in self.processes if p not in producers])]:
            if process.name == "api" and self._broker_is_ours():
                self._wait_for_worker()
            if process.running:
                with self.console.status(f"Stopping {process.name}..."):
                    process.stop(timeout=30)
                self.console.print(f"[dim]stopped {process.name}[/]")
        self.processes.clear()

    def _broker_is_ours(self) -> bool:
        return any(p.name == "kafka" for p in self.processes)

    def _wait_for_worker(self) -> None:
        """Wait until the worker has acknowledged everything in the topic, at most
        DRAIN_SECONDS; a Ctrl-C (or SIGTERM) stops waiting. Says what is left uncounted."""
        worker = next((p for p in self.processes if p.name == "worker"), None)
        if self.settings is None or worker is None or not worker.running:
            return
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        left = -1
        try:
            deadline = time.monotonic() + DRAIN_SECONDS
            with self.console.status("Letting the worker count what the topic holds...") as status:
                while worker.running and time.monotonic() < deadline:
                    try:
                        left = asyncio.run(uncounted_events(self.settings))
                    except Exception as exc:  # the broker is gone: nothing more to wait for
                        self.console.print(f"[yellow]! cannot tell what is left: {exc!r}[/]")
                        return
                    if left == 0:
                        break
                    status.update(
                        f"The worker is counting what the broker still holds: {left:,} events"
                        " left (Ctrl-C again to stop now; the embedded broker forgets them)"
                    )
                    time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous)
        if left == 0:
            self.console.print("[green]✓[/] every event in the topic is counted")
        else:
            with contextlib.suppress(Exception):  # else the number stays the last one seen
                left = asyncio.run(uncounted_events(self.settings))
            self.console.print(
                f"[yellow]! {left:,} events left uncounted[/] (not yet acknowledged by the worker;"
                " the embedded broker loses them when it stops)"
            )


def run_up(options: StackOptions, console: Console | None = None) -> int:
    """Start the stack, watch it, stop it; returns the process exit code."""
    console = console or Console()
    stack = Stack(options, console)
    other = stack.running_elsewhere()
    if other is not None:
        console.print(
            f"[red]A stack is already running on {options.state_dir} (pid {other}).[/]"
            f" Stop it first, or use another --state-dir."
        )
        return 1
    # Ctrl-C and SIGTERM both mean "shut down cleanly". SIGINT is set explicitly: Python leaves
    # it ignored when the parent ignored it (a background job of a non-interactive shell).
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stack.start()
        return stack.watch()
    except KeyboardInterrupt:
        console.print("\nShutting down...")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


# --- helpers -------------------------------------------------------------------------------


async def uncounted_events(settings: Settings) -> int:
    """Messages of the topic beyond the worker group's committed offsets (acknowledged once
    counted or dead-lettered, committed every few seconds).

    Each partition's end is the high watermark of a fetch from the committed offset: Tansu
    answers ListOffsets (``end_offsets``) with a wrong end (1 for a partition of 300 messages).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        fetch_max_bytes=1024,
        max_partition_fetch_bytes=1024,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        committed = {}
        for tp in partitions:
            committed[tp] = await consumer.committed(tp) or 0
            consumer.seek(tp, committed[tp])
        deadline = time.monotonic() + 10
        while any(consumer.highwater(tp) is None for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError("the broker gave no high watermark within 10 s")
            await consumer.getmany(timeout_ms=200, max_records=1)
        return sum(max(0, consumer.highwater(tp) - committed[tp]) for tp in partitions)
    finally:
        await consumer.stop()


def _redact(url: str) -> str:
    """``url`` without a password, for display."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _scrape(url: str) -> dict[str, float]:
    """Sum of each worker metric over its labels; empty while the worker is not serving yet."""
    try:
        text = httpx.get(url, timeout=0.5).text
    except httpx.HTTPError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def _ensure_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``admin_url`` if missing; returns its URL."""
    from urllib.parse import urlsplit, urlunsplit

    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


async def _migrate_and_create_key(settings: Settings) -> tuple[list[str], str]:
    from api.auth import Role, create_key
    from core.db import migrate

    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        key = await create_key(pool, Role.VIEWER, "default", label="interaction-summary up")
    finally:
        await pool.close()
    return applied, key


async def _load_demo_catalog(settings: Settings) -> str:
    from api.catalog import CatalogDocument, load_catalog
    from cli.synthetic import make_catalog

    document = CatalogDocument.model_validate(make_catalog(DEMO_CATALOG_SEED).document())
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await load_catalog(pool, document)
    finally:
        await pool.close()
    return (
        f"{len(document.actions)} actions, {len(document.treatments)} treatments,"
        f" {len(document.channels)} channels"
    )


# The demo producer draws its events from this catalog: the API shows their names.
DEMO_CATALOG_SEED = 0
# How far back the demo's history reaches: a month, so the current month and every rolling
# window up to 30 days hold events from the first look on.
DEMO_HISTORY_DAYS = 30.0


async def publish_demo_history(
    settings: Settings, events: int, seed: int, days: float = DEMO_HISTORY_DAYS
) -> int:
    """Publish ``events`` synthetic events of the demo catalog, stamped uniformly over the
    ``days`` before now; returns how many the broker acknowledged."""
    from cli import produce as producing

    messages = producing.synthetic_messages(seed, DEMO_CATALOG_SEED, days, producing.utc_now)
    stats = await producing.publish(
        settings.kafka_bootstrap_servers, settings.topic, producing.paced(messages, 0, events)
    )
    return stats.acknowledged


async def _publish_demo_history(settings: Settings, events: int) -> str:
    acknowledged = await publish_demo_history(settings, events, random_seed())
    return f"{acknowledged:,} events over the last {DEMO_HISTORY_DAYS:g} days"


def random_seed() -> int:
    """A fresh event seed per run: the same seed again would repeat event ids (duplicates)."""
    return secrets.randbits(31)
