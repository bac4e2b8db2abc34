"""One batch from the topic to both stores: validate, dead-letter, commit, mirror.

Kept apart from the Faust agent so the agent stays a short loop and this can be driven by
any consumer (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from streams import metrics
from streams.events import Interaction, Rejected, parse_event
from streams.postgres_sink import WrittenBatch, write_batch
from streams.redis_sink import NOT_READY, RedisSink

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message as read from the topic, with where it came from."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: RawMessage
    reason: str


DeadLetterSender = Callable[[Sequence[DeadLetter]], Awaitable[None]]


def split_batch(
    messages: Sequence[RawMessage], now: datetime, future_tolerance: timedelta
) -> tuple[list[Interaction], list[DeadLetter]]:
    """Accepted events and dead letters of a batch (pure)."""
    accepted: list[Interaction] = []
    rejected: list[DeadLetter] = []
    for message in messages:
        try:
            accepted.append(parse_event(message.value, now, future_tolerance))
        except Rejected as exc:
            rejected.append(DeadLetter(message, str(exc)))
    return accepted, rejected


class BatchProcessor:
    """Takes raw batches to Postgres (exactly once) and Redis (mirrored, fenced)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis_sink: RedisSink,
        send_dead_letters: DeadLetterSender,
        future_tolerance: timedelta,
    ) -> None:
        self._pool = pool
        self._redis = redis_sink
        self._send_dead_letters = send_dead_letters
        self._future_tolerance = future_tolerance

    async def process(self, messages: Sequence[RawMessage]) -> None:
        """Return only when every message is counted or dead-lettered (safe to ack)."""
        started = time.perf_counter()
        metrics.EVENTS_IN.inc(len(messages))
        accepted, rejected = split_batch(messages, datetime.now(UTC), self._future_tolerance)
        if rejected:
            for letter in rejected:
                log.warning(
                    "event rejected partition=%d offset=%d reason=%s",
                    letter.message.partition,
                    letter.message.offset,
                    letter.reason,
                )
            await self._send_dead_letters(rejected)
            metrics.EVENTS_REJECTED.inc(len(rejected))
        if accepted:
            written = await self._commit(accepted)
            await self._mirror(written)
        metrics.BATCHES.inc()
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _commit(self, events: Sequence[Interaction]) -> WrittenBatch:
        """Write to Postgres, retrying until it works: skipping would lose events."""
        attempt = 0
        while True:
            try:
                written = await write_batch(self._pool, events, datetime.now(UTC))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                attempt += 1
                metrics.STORE_RETRIES.labels("postgres").inc()
                delay = min(_MAX_BACKOFF_SECONDS, 0.1 * 2**attempt)
                log.warning(
                    "postgres write failed attempt=%d retry_in=%.1fs error=%r", attempt, delay, exc
                )
                await asyncio.sleep(delay)
                continue
            metrics.EVENTS_COUNTED.inc(written.new_events)
            metrics.EVENTS_DUPLICATE.inc(written.duplicates)
            return written

    async def _mirror(self, written: WrittenBatch) -> None:
        """Apply to Redis now; on any Redis trouble the outbox keeps it for the catch-up loop."""
        if written.outbox_id is None:
            return
        try:
            outcome = await self._redis.apply_deltas(written.outbox_id, written.redis_deltas)
            if outcome != NOT_READY:
                await self._redis.forget([written.outbox_id])
        except Exception as exc:  # Redis or Postgres down: the outbox row stays for later.
            metrics.STORE_RETRIES.labels("redis").inc()
            log.warning("redis apply deferred outbox_id=%d error=%r", written.outbox_id, exc)

    async def keep_redis_exact(self) -> None:
        """Periodic: resync an emptied Redis, then apply whatever the outbox still holds."""
        try:
            if not await self._redis.is_ready():
                await self._redis.resync()
            await self._redis.drain_outbox()
        except Exception as exc:  # the next tick tries again
            log.warning("redis catch-up failed error=%r", exc)
