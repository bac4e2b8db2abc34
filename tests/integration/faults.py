"""Fault injection for the reliability tests, and the checks every one of them ends with.

- Servers a test may stop and start again on the same port (``Restartable``): its own Redis
  or Tansu broker, never the session's shared ones.
- ``TcpProxy``: a link to Postgres that can be cut (open connections dropped, new ones
  refused) and restored, as when the database host goes away.
- ``Publisher``: one producer for a whole test, with room for 1 MB messages, optional pacing.
- The end-of-test oracle for the API: every grouping, period and window answered over HTTP,
  compared with the independent recount (``tests/recount.py``); and bounds for answers taken
  while events still flow.
- Log and storage checks: no API key or password in any service log.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from api.auth import Role, create_key, revoke_key
from cli.embedded import HOST, ServerProcess, free_port, start_kafka, start_postgres, start_redis
from core.config import Settings
from tests.integration.traffic import Traffic, make_traffic
from tests.recount import Event, expected_summary, summary_window
from tests.support import encode_event

# --- servers a test can stop ---------------------------------------------------------------


@dataclass
class Restartable:
    """A server of this test only, restarted on the same port (clients keep their address)."""

    name: str
    port: int
    log_path: Path
    launch: Callable[[int, Path], ServerProcess]
    process: ServerProcess | None = None
    starts: int = 0

    def start(self) -> Restartable:
        self.process = self.launch(self.port, self.log_path)
        self.starts += 1
        return self

    def stop(self) -> None:
        """A clean stop (SIGTERM); in-memory state (Tansu, our Redis) is gone with it."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to flush or shut down (a crash)."""
        if self.process is not None and self.process.running:
            self.process.process.kill()
            self.process.process.wait(10)

    @property
    def url(self) -> str:
        assert self.process is not None
        return self.process.url


def own_redis(log_dir: Path) -> Restartable:
    """A Redis for one test: no persistence, so a restart brings it back empty."""
    return Restartable("redis", free_port(), log_dir / "redis.log", start_redis).start()


def own_postgres(log_dir: Path, password: str | None = None) -> Restartable:
    """A Postgres for one test, with production durability (fsync and synchronous_commit on,
    unlike the session's throwaway cluster); its data directory survives restarts."""
    data_dir = log_dir / "postgres-data"

    def launch(port: int, log_path: Path) -> ServerProcess:
        return start_postgres(data_dir, port, log_path, password=password, max_connections=50)

    return Restartable("postgres", free_port(), log_dir / "postgres.log", launch).start()


def own_kafka(log_dir: Path) -> Restartable:
    """A Tansu broker for one test, in-memory storage: a restart loses topics and offsets."""
    return Restartable("kafka", free_port(), log_dir / "kafka.log", start_kafka).start()


# --- a Postgres link that can be cut -------------------------------------------------------


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; ``cut()`` drops every connection and refuses
    new ones until ``restore()``.

    Runs on a thread of its own with its own event loop, so a test that blocks (waiting for a
    subprocess to exit) cannot stall the traffic it forwards.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.connections = 0  # accepted in total, to show clients really went through
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.BaseTransport] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def cut(self) -> None:
        """Stop listening (connections refused) and reset every open connection."""
        self._run(self._cut())

    def restore(self) -> None:
        self._run(self._listen())

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, HOST, self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._open):
            transport.abort()  # RST: the client sees the connection dropped, not a clean close
        self._open.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        if self._server is None:  # cut while we were connecting
            client_w.transport.abort()
            server_w.transport.abort()
            return
        pair = {client_w.transport, server_w.transport}
        self._open |= pair
        await asyncio.gather(
            _pipe(client_r, server_w), _pipe(server_r, client_w), return_exceptions=True
        )
        self._open -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


def dsn_through(dsn: str, port: int, password: str | None = None) -> str:
    """``dsn`` pointed at ``127.0.0.1:port``, with ``password`` if it has none of its own."""
    parts = urlsplit(dsn)
    user = parts.username or ""
    secret = parts.password or password
    auth = f"{user}:{secret}@" if secret else (f"{user}@" if user else "")
    return urlunsplit(parts._replace(netloc=f"{auth}{HOST}:{port}"))


# --- publishing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A message exactly as published: any key, any value (None is a tombstone)."""

    key: bytes | None
    value: bytes | None


Message = dict[str, Any] | bytes | Raw

# Tansu has no message size limit of its own; aiokafka's default (1 MiB) would refuse a 1 MB
# value plus its key and framing.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class Publisher:
    """A producer kept open for a whole test (``async with Publisher(settings) as pub``)."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.topic = topic or settings.topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_request_size=MAX_REQUEST_BYTES,
        )
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, messages: Sequence[Message], rate: float | None = None) -> list[Any]:
        """Publish in order and wait for every acknowledgement; returns the record metadata.

        ``rate`` (messages per second) spreads them out, so a fault can land while they flow.
        """
        started = time.monotonic()
        pending = []
        for i, message in enumerate(messages):
            if rate and i % 50 == 0:
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing the load, not synchronizing
            if isinstance(message, Raw):
                key, value = message.key, message.value
            else:
                key, value = encode_event(message)
            pending.append(await self._producer.send(self.topic, value=value, key=key))
            self.sent += 1
        return list(await asyncio.gather(*pending))


def wave(
    count: int,
    seed: int,
    prefix: str,
    republish: Sequence[dict[str, Any]] = (),
    invalid_count: int = 0,
) -> Traffic:
    """``make_traffic`` with ids of its own (``prefix``), so waves never collide by accident,
    plus ``republish``: events of earlier waves published again (duplicates across a fault)."""
    base = make_traffic(count, seed=seed, invalid_count=invalid_count)
    renamed: dict[int, dict[str, Any]] = {}

    def rename(event: dict[str, Any]) -> dict[str, Any]:
        # a duplicate is the same dict object in make_traffic: it keeps the same new id
        return renamed.setdefault(id(event), {**event, "id": f"{prefix}{event['id']}"})

    out = Traffic()
    for message in base.messages:
        out.messages.append(rename(message) if isinstance(message, dict) else message)
    out.valid = [rename(e) for e in base.valid]
    out.invalid = list(base.invalid)
    step = max(1, len(out.messages) // (len(republish) + 1))
    for i, again in enumerate(republish):
        out.messages.insert((i + 1) * step + i, again)
        out.valid.append(again)
    return out


# --- the service's processes ---------------------------------------------------------------


_ASSIGNED = "Setting newly assigned partitions"


def assigned_partitions(log: str, topic: str) -> set[int] | None:
    """Partitions of ``topic`` in the latest assignment a worker logged (None: no assignment yet).

    Faust logs a table per assignment, e.g. ``| interactions-x | {0-3, 6} |``.
    """
    at = log.rfind(_ASSIGNED)
    if at < 0:
        return None
    table = log[at:].split(" for group ", 1)[0]
    match = re.search(rf"\|\s*{re.escape(topic)}\s*\|\s*\{{([^}}]*)\}}", table)
    if match is None:
        return set()
    found: set[int] = set()
    for part in match.group(1).split(","):
        first, _, last = part.strip().partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def assignments(log: str) -> int:
    """How many partition assignments a worker has logged (one per rebalance it went through)."""
    return log.count(_ASSIGNED)


async def offsets_all_committed(settings: Settings) -> bool:
    """Whether the worker's group has committed every partition of the topic up to its end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


# --- keys ----------------------------------------------------------------------------------


@dataclass
class Keys:
    """API keys of a test, in clear (only their hashes are in Postgres)."""

    by_name: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.by_name[name]

    def values(self) -> list[str]:
        return list(self.by_name.values())


async def make_keys(dsn: str, tenants: Iterable[str] = ("default", "acme")) -> Keys:
    """A viewer per tenant (``viewer:<tenant>``), a producer, an editor, an admin and a revoked
    admin."""
    conn_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    keys = Keys()
    try:
        for tenant in tenants:
            keys.by_name[f"viewer:{tenant}"] = await create_key(conn_pool, Role.VIEWER, tenant)
        keys.by_name["producer"] = await create_key(conn_pool, Role.PRODUCER)
        keys.by_name["editor"] = await create_key(conn_pool, Role.EDITOR)
        keys.by_name["admin"] = await create_key(conn_pool, Role.ADMIN)
        keys.by_name["revoked"] = await create_key(conn_pool, Role.ADMIN)
        await revoke_key(conn_pool, keys.by_name["revoked"])
    finally:
        await conn_pool.close()
    return keys


# --- the API against the recount -----------------------------------------------------------

GROUPINGS = ("action", "treatment", "channel", "customer")
DAYS = (1, 7, 30, 90)
WINDOWS = ("period", "rolling")
QUERIES: tuple[dict[str, Any], ...] = tuple(
    {"groupBy": g, "days": d, "window": w, "limit": 500}
    for g in GROUPINGS
    for d in DAYS
    for w in WINDOWS
)
_META = frozenset(
    {"name", "issue", "group", "status", "priority", "offerName", "channelType", "channelName",
     "templateType", "abTestVariant", "weight"}
)  # fmt: skip
_COUNTS = ("impression", "click", "dismiss", "accept", "convert", "total")


def counters_only(body: dict[str, Any]) -> list[dict[str, Any]]:
    """An answer's rows without catalog metadata (the recount knows no catalog)."""
    return [{k: v for k, v in row.items() if k not in _META} for row in body["summary"]]


def _row_id(row: dict[str, Any]) -> str:
    return str(row.get("id", row.get("customerId")))


class Recount:
    """Expected API answers for a set of distinct events, by tenant (computed on demand)."""

    def __init__(
        self, events: Sequence[Event], classes: dict[str, dict[str, str]] | None = None
    ) -> None:
        self.classes = classes or {}  # tenant -> custom type -> classification
        self.by_tenant: dict[str, list[Event]] = defaultdict(list)
        for e in events:
            self.by_tenant[e.tenant].append(e)

    def answer(self, tenant: str, query: dict[str, Any], now: datetime) -> dict[str, Any]:
        start, end = summary_window(query["days"], query["window"] == "rolling", now)
        events = [
            e
            for e in self.by_tenant.get(tenant, [])
            if e.ts >= start and (end is None or e.ts < end)
        ]
        return expected_summary(
            events,
            tenant,
            query["groupBy"],
            start,
            end,
            query["limit"],
            query.get("offset", 0),
            self.classes.get(tenant),
        )


class ApiClient:
    """GETs the summary with one key per tenant; every response must be JSON."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys  # tenant -> viewer key
        self.requests = 0

    async def get(
        self, tenant: str, query: dict[str, Any], path: str = "/api/v1/interaction-summary"
    ) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=15) as client:
            response = await client.get(
                path, params=query, headers={"Authorization": f"Bearer {self.keys[tenant]}"}
            )
        self.requests += 1
        assert response.headers.get("content-type", "").startswith("application/json"), (
            f"{path} {query}: not JSON: {response.status_code} {response.text[:300]}"
        )
        return response


def mismatch(body: dict[str, Any], want: dict[str, Any], where: str) -> str | None:
    if body["total"] != want["total"]:
        return f"{where}: total {body['total']} != {want['total']}"
    got = counters_only(body)
    if got != want["summary"]:
        for a, b in zip(got, want["summary"], strict=False):
            if a != b:
                return f"{where}: first differing row {a} != expected {b}"
        return f"{where}: {len(got)} rows != {len(want['summary'])} expected"
    return None


async def api_mismatches(
    api: ApiClient, recount: Recount, sources: dict[str, set[str]] | None = None
) -> list[str]:
    """Every query of ``QUERIES`` for every tenant, compared with the recount; [] when exact.

    ``sources`` collects which store answered each window type.
    """
    problems: list[str] = []
    for tenant in api.keys:
        for query in QUERIES:
            response = await api.get(tenant, query)
            where = f"tenant={tenant} {query}"
            if response.status_code != 200:
                problems.append(f"{where}: HTTP {response.status_code} {response.text[:200]}")
                continue
            body = response.json()
            want = recount.answer(tenant, query, datetime.now(UTC))
            if sources is not None and want["total"]:  # an empty period has no bucket to read
                sources.setdefault(query["window"], set()).add(body["source"])
            problem = mismatch(body, want, where)
            if problem:
                problems.append(problem)
    return problems


async def assert_api_matches_recount(
    api: ApiClient, recount: Recount, timeout: float = 30, period_source: str | None = None
) -> dict[str, set[str]]:
    """Every answer equals the recount (waits ``timeout`` for Redis to catch up); returns the
    sources that answered, by window. With ``period_source``, also waits until every current
    period is answered by that store."""
    deadline = time.monotonic() + timeout
    while True:
        sources: dict[str, set[str]] = {}
        problems = await api_mismatches(api, recount, sources)
        if period_source is not None and sources.get("period") != {period_source}:
            problems.append(f"current periods answered by {sources.get('period')}")
        if not problems:
            return sources
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(problems)} API answers differ from the recount:\n" + "\n".join(problems[:10])
            )
        await asyncio.sleep(0.5)


def out_of_bounds(
    body: dict[str, Any], low: dict[str, Any], high: dict[str, Any], where: str
) -> list[str]:
    """Problems of an answer taken while events flow: every group present at the start must be
    there, and every counter lies between what was counted before and after the flow."""
    rows = {_row_id(r): r for r in counters_only(body)}
    lows = {_row_id(r): r for r in low["summary"]}
    highs = {_row_id(r): r for r in high["summary"]}
    problems = []
    if not low["total"] <= body["total"] <= high["total"]:
        problems.append(f"{where}: total {body['total']} not in [{low['total']}, {high['total']}]")
    for group in lows.keys() - rows.keys():
        problems.append(f"{where}: group {group!r} counted before the fault is missing")
    for group, row in rows.items():
        if group not in highs:
            problems.append(f"{where}: group {group!r} was never published")
            continue
        for counter in (*_COUNTS, "uniqueActions", "treatmentCount"):
            if counter not in row:
                continue
            floor = lows[group][counter] if group in lows else 0
            if not floor <= row[counter] <= highs[group][counter]:
                problems.append(
                    f"{where}: {group!r} {counter}={row[counter]} not in [{floor}, {highs[group][counter]}]"
                )
    return problems


@dataclass
class Watch:
    """Answers collected while a fault lasts: how many, from which source, and any problem."""

    answers: int = 0
    unavailable: int = 0
    sources: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    problems: list[str] = field(default_factory=list)


async def watch_answers(
    api: ApiClient,
    before: Recount,
    after: Recount,
    until: Callable[[], bool],
    watch: Watch,
    queries: Sequence[dict[str, Any]] = QUERIES,
) -> Watch:
    """Ask every query, round after round, until ``until()``: each 200 must lie within the
    bounds, each non-200 must be a 503 with the JSON error body."""
    while True:
        for tenant in api.keys:
            for query in queries:
                response = await api.get(tenant, query)
                where = f"tenant={tenant} {query}"
                body = response.json()
                if response.status_code == 503:
                    watch.unavailable += 1
                    if body.get("error", {}).get("status") != 503 or not body["error"].get("code"):
                        watch.problems.append(f"{where}: 503 without the error body: {body}")
                    continue
                if response.status_code != 200:
                    watch.problems.append(f"{where}: HTTP {response.status_code} {body}")
                    continue
                watch.answers += 1
                watch.sources[body["source"]] += 1
                now = datetime.now(UTC)
                watch.problems += out_of_bounds(
                    body, before.answer(tenant, query, now), after.answer(tenant, query, now), where
                )
        if until():
            return watch


# --- secrets -------------------------------------------------------------------------------


def assert_no_secret_in_logs(log_dir: Path, secrets: Iterable[str]) -> int:
    """No ``secret`` appears in any ``*.log`` under ``log_dir``; returns how many files were read."""
    files = sorted(log_dir.rglob("*.log"))
    assert files, f"no log files under {log_dir}"
    for path in files:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}...) appears in {path}"
    return len(files)
