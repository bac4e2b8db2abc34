"""The Faust worker: one agent that turns the interactions topic into period counters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import faust
from aiokafka.errors import IllegalStateError
from faust.sensors import Monitor
from mode.utils.logging import ExtensionFormatter
from prometheus_client import start_http_server
from redis.asyncio import Redis

from core.config import Settings, get_settings
from core.db import create_pool
from core.logs import JsonFormatter, logging_config
from streams import dead_letters as dlq
from streams.exits import EXIT_CONFIG, stop_worker
from streams.metrics import (
    CONSUMER_LAG,
    LOG_REWOUND,
    RETENTION_EVENTS_FROM,
    RETENTION_RUNS,
)
from streams.pipeline import (
    BatchProcessor,
    DeadLetter,
    GroupCommit,
    RawMessage,
    postgres_error_kind,
)
from streams.positions import went_backwards
from streams.redis_sink import RedisSink
from streams.retention import run_retention
from streams.topics import service_topics

log = logging.getLogger(__name__)


def kafka_url(bootstrap_servers: str) -> str:
    """Faust's broker URL for a comma-separated bootstrap list."""
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap_servers.split(","))


class LeanMonitor(Monitor):  # type: ignore[misc]
    """Faust's Monitor without its per-message and per-event statistics (about 8 % of Faust's
    CPU per message, bench/README.md); nothing here reads them: the worker's Prometheus
    metrics count batches."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        # when it was fetched: a message of a log read again from the start is told apart
        # from the old log's messages still in the buffers (see _acknowledge)
        message.time_in = time.monotonic()

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


def create_app(settings: Settings) -> faust.App:
    # Consumer settings: see docs/performance.md for how each was measured.
    return faust.App(
        settings.consumer_group,
        broker=kafka_url(settings.kafka_bootstrap_servers),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        Monitor=LeanMonitor,
        datadir=str(settings.worker_data_dir),
        producer_max_request_size=4 * 1024 * 1024,
        # A count, not bytes (docs/performance.md, "Memory").
        stream_buffer_maxsize=settings.batch_max_events * 2,
        consumer_max_fetch_size=settings.consumer_max_fetch_bytes,
        broker_max_poll_records=settings.batch_max_events,
        # Tansu holds a group's first JoinGroup for half the session timeout (Faust's default
        # 60 s made every worker start take 30 s); 6 s joins in 3 s. Heartbeats come from the
        # consumer thread, so a busy agent does not miss them.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.5,
    )


settings = get_settings()
app = create_app(settings)
_interactions_topic, _dead_letters_topic = service_topics(settings)
interactions = app.topic(
    _interactions_topic.name,
    key_serializer="raw",
    value_serializer="raw",
    partitions=_interactions_topic.num_partitions,
)
dead_letters = app.topic(
    _dead_letters_topic.name,
    key_serializer="raw",
    value_serializer="raw",
    partitions=_dead_letters_topic.num_partitions,
)
# Between the agent (reader) and the committer; the lag timer tells it about a backlog.
_batches: GroupCommit[Any] = GroupCommit(
    settings.batch_max_events, max_bytes=settings.batch_max_bytes, size=lambda e: _size(e)
)


# Batches of consumer lag past which the committer waits for full batches (a backlog).
FILL_AFTER_BATCHES = 2


class _Worker:
    """Connections of this worker process, opened once on the first batch."""

    processor: BatchProcessor | None = None
    _lock = asyncio.Lock()

    @classmethod
    async def get(cls) -> BatchProcessor:
        async with cls._lock:
            if cls.processor is None:
                cls.processor = await _open_processor()
            return cls.processor


async def _open_processor() -> BatchProcessor:
    pool = await open_pool(settings.database_url)
    redis = Redis.from_url(settings.redis_url)
    await dead_letters.maybe_declare()
    return BatchProcessor(
        pool,
        RedisSink(redis, settings.redis_prefix, settings.redis_resync_chunk_rows),
        send_dead_letters,
        timedelta(seconds=settings.future_tolerance_seconds),
        outbox_max_batches=settings.redis_outbox_max_batches,
        reconcile_seconds=settings.redis_reconcile_seconds,
        reconcile_groups=settings.redis_reconcile_groups,
    )


async def open_pool(dsn: str) -> asyncpg.Pool:
    """The worker's pool, once Postgres accepts it and the migrations are applied.

    Waits while Postgres is not reachable or still starting; stops the worker with the
    database's own message when waiting cannot help (a wrong password, an unknown database,
    a migration that fails).
    """
    while True:
        try:
            return await create_pool(dsn, min_size=1, max_size=6)
        except Exception as exc:
            if postgres_error_kind(exc) != "transient":
                stop_worker(
                    f"postgres refused the worker ({type(exc).__name__}: {exc});"
                    " check DATABASE_URL and the migrations",
                    exc,
                    EXIT_CONFIG,
                )
            log.warning("postgres not reachable yet, retrying error=%r", exc)
            await asyncio.sleep(1.0)


async def send_dead_letters(letters: Sequence[DeadLetter]) -> None:
    await dlq.send_dead_letters(_publish_dead_letter, settings.dlq_topic, letters)


async def _publish_dead_letter(
    key: bytes | None, value: bytes | None, headers: dlq.Headers
) -> None:
    delivered = await dead_letters.send(key=key, value=value, headers=headers)
    await delivered


def _stop_if_failed(committer: asyncio.Future[None]) -> None:
    error = None if committer.cancelled() else committer.exception()
    if error is not None:
        stop_worker(
            "batch not counted, none of it acknowledged (read again after a restart)", error
        )


def _size(event: Any) -> int:
    """Bytes a buffered event holds: its key and value."""
    message = event.message
    return len(message.key or b"") + len(message.value or b"")


def _raw(event: Any) -> RawMessage:
    message = event.message
    # Faust gives the broker's record timestamp in epoch seconds (absent: None or <= 0).
    stamp = message.timestamp
    record_time = datetime.fromtimestamp(stamp, UTC) if stamp and stamp > 0 else None
    return RawMessage(
        message.key, message.value, message.topic, message.partition, message.offset, record_time
    )


@app.agent(interactions)
async def count_interactions(stream: Any) -> None:
    """Read events into the group-commit buffer; the processor counts and acknowledges them."""
    events = stream.noack()
    batches = _batches
    processor = await _Worker.get()
    committer = asyncio.ensure_future(processor.run(batches, _raw, partial(_acknowledge, events)))
    committer.add_done_callback(_stop_if_failed)  # an error there stops the worker at once
    try:
        async for event in events.events():
            await batches.put(event)
    except Exception as exc:
        stop_worker("the agent failed, nothing it read is acknowledged", exc)
    finally:
        committer.cancel()


@app.on_before_shutdown.connect
async def mirror_before_exit(app: faust.App, **kwargs: Any) -> None:
    """The consumer has stopped: hand Redis what this worker committed before it exits."""
    processor = _Worker.processor
    if processor is not None:
        left = await processor.finish_mirroring(seconds=10.0)
        log.info("redis caught up before exit batches_left=%d", left)


@app.timer(interval=1.0)
async def keep_redis_exact() -> None:
    processor = await _Worker.get()
    await processor.keep_redis_exact()


@app.task
async def apply_retention() -> None:
    """Every ``retention_check_seconds``: the next months' history partitions, and retention
    (streams/retention.py; one worker at a time, the others skip their turn)."""
    processor = await _Worker.get()
    while True:
        try:
            async with processor.pool.acquire() as conn:
                run = await run_retention(
                    conn,
                    datetime.now(UTC),
                    settings.retention_history_days,
                    settings.retention_bucket_days,
                    settings.retention_distinct_days,
                )
            if run is not None:
                RETENTION_RUNS.inc()
                since = run.horizons.events_from
                RETENTION_EVENTS_FROM.set(since.timestamp() if since else 0)
        except Exception as exc:  # the next turn tries again; counting goes on meanwhile
            log.warning("retention run failed error=%r", exc)
        await asyncio.sleep(settings.retention_check_seconds)


# Partition -> when it was last read again from the start (time.monotonic()).
_rewound_at: dict[Any, float] = {}


async def _acknowledge(stream: Any, event: Any) -> bool:
    """Acknowledge a counted event, unless it was fetched from a log that has since been read
    again from the start: its offset belongs to the old log, and committing it could skip
    messages of the new one (it is counted all the same, by id)."""
    message = event.message
    rewound = _rewound_at.get(message.tp)
    if rewound is not None and (message.time_in or 0.0) < rewound:
        message.acked = True  # done with it, without recording its offset
        app.consumer._unacked_messages.discard(message)
        return False
    return bool(await stream.ack(event))


async def _rewind(consumer: Any, tp: Any, log_end: int) -> None:
    """Read ``tp`` again from the start, forgetting Faust's positions of the old log."""
    log.warning(
        "partition log went backwards, reading it again from the start"
        " topic=%s partition=%d log_end=%d committed=%s last_read=%s",
        tp.topic,
        tp.partition,
        log_end,
        consumer._committed_offset.get(tp),
        consumer._read_offset.get(tp),
    )
    for offsets in (consumer._acked, consumer._acked_index, consumer._gap):
        offsets.pop(tp, None)
    consumer._committed_offset[tp] = None
    await consumer.seek(tp, 0)
    _rewound_at[tp] = time.monotonic()
    LOG_REWOUND.labels(str(tp.partition)).inc()


@app.timer(interval=1.0)
async def report_consumer_lag() -> None:
    """Messages between each partition's end (as last fetched) and our read position; more
    than FILL_AFTER_BATCHES batches behind in all, the committer waits for full batches (a
    backlog). A partition whose end is below where we already were is read again from the
    start (streams/positions.py)."""
    consumer = app.consumer
    behind = 0
    for tp in consumer.assignment():
        if tp.topic != settings.topic:
            continue
        highwater = consumer.highwater(tp)
        committed, last_read = consumer._committed_offset.get(tp), consumer._read_offset.get(tp)
        if went_backwards(highwater, committed, last_read):
            await _rewind(consumer, tp, highwater)
        try:
            position = await consumer.position(tp)
        except IllegalStateError:  # revoked by a rebalance since assignment() was read
            continue
        if position is not None and highwater is not None:
            lag = max(highwater - position, 0)
            CONSUMER_LAG.labels(str(tp.partition)).set(lag)
            behind += lag
    # Two batches: at a rate the worker keeps up with, one batch of lag must not make every
    # batch wait to fill (bench.freshness: p50 2.7 s at 5,000 events/s, two lanes).
    _batches.fill = behind > settings.batch_max_events * FILL_AFTER_BATCHES


@app.task
async def serve_metrics() -> None:
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)


class WorkerLogFormatter(JsonFormatter):
    """JSON lines (core.logs) with Faust's own rendering of log arguments, e.g. an assignment's
    partitions as the table operators (and tests/integration/consumption.py) read."""

    _format_args = ExtensionFormatter._format_args
    format_arg = ExtensionFormatter.format_arg
    _format_arg = ExtensionFormatter._format_arg
    _format_arg2 = ExtensionFormatter._format_arg2

    def format(self, record: logging.LogRecord) -> str:
        self._format_args(record)
        return super().format(record)


def run_worker(loglevel: str = "info") -> None:
    """Run this process as a Faust worker until stopped."""
    import mode.loop
    from faust import Worker

    # uvloop: about 16 % less of Faust's own CPU per message (bench/README.md).
    mode.loop.use("uvloop")
    # JSON lines like every other process (core.logs), instead of Faust's coloured text.
    config = logging_config(loglevel, WorkerLogFormatter)
    worker = Worker(app, loglevel=loglevel, quiet=True, logging_config=config)
    worker.execute_from_commandline()
