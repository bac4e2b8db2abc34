"""Batches from the topic to both stores: validate, dead-letter, commit, acknowledge, mirror.

Kept apart from the Faust agent so the agent stays a short loop and this can be driven by
any consumer (tests, benchmarks).

Batches adapt to the traffic (group commit): the committer takes whatever has arrived while
it was busy. A lone event is committed at once; while the worker reads a backlog (consumer
lag above a batch), batches fill up to ``batch_max_events``, and Python reads the next batch
while Postgres counts this one. With ``COMMIT_LANES`` above one, while one batch commits another
lane takes, parses and sends the next, each lane into a bucket shard of its own (so they never
wait for each other's row locks). A batch is acknowledged only after its commit (Faust commits an
offset only once every offset before it is acknowledged), and Redis gets it after that,
while the next batch commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import asyncpg

from core.mirror import epoch_number, mirror_state
from streams import metrics, outbox
from streams.events import Interaction, Rejected, parse_event
from streams.postgres_sink import WrittenBatch, own_shards, write_batch
from streams.redis_sink import NOT_READY, RedisSink

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 5.0
# Batches committing at once in one worker. One: two lanes cost the worker 6 and Postgres 4 µs
# more per event and were not faster in the same run (bench/README.md, "Second round").
COMMIT_LANES = 1

# SQLSTATE classes (first two characters) of Postgres errors.
# Errors that heal by waiting: connection exceptions, transaction rollbacks (serialization
# failure, deadlock), insufficient resources (too many connections, disk full), object not in
# prerequisite state (lock not available), operator intervention (admin shutdown, cannot
# connect now, query canceled), system errors (I/O).
TRANSIENT_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
# Errors that some event of the batch causes: data exceptions (a value out of range, an
# encoding), integrity constraints, program limits (a row or index entry too large).
EVENT_CLASSES = frozenset({"22", "23", "54"})


def postgres_error_kind(exc: BaseException) -> str:
    """ "transient" (retry with backoff), "event" (some event causes it: isolate it) or
    "fatal" (neither waiting nor leaving events out helps: the worker stops)."""
    if isinstance(exc, ValueError):  # asyncpg could not encode a value (client-side DataError)
        return "event"
    if isinstance(exc, OSError | asyncpg.InterfaceError | TimeoutError):
        return "transient"  # the connection broke, or no answer in time
    if isinstance(exc, asyncpg.InternalClientError):
        # asyncpg's protocol state after a connection died mid-commit ("cannot switch to
        # state 15; another operation is in progress"): the pool discards the connection.
        return "transient"
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in TRANSIENT_CLASSES:
            return "transient"
        if state[:2] in EVENT_CLASSES:
            return "event"
    return "fatal"


def postgres_reason(exc: BaseException) -> str:
    """A dead letter's reason for an event Postgres refused: its SQLSTATE and message."""
    state = getattr(exc, "sqlstate", None) or "?"
    detail = getattr(exc, "detail", None)
    return f"postgres refused the event ({state}): {exc}" + (f" ({detail})" if detail else "")


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message as read from the topic, with where it came from.

    ``timestamp`` is the record's own timestamp from the broker (None when it has none).
    """

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: RawMessage
    reason: str


DeadLetterSender = Callable[[Sequence[DeadLetter]], Awaitable[None]]

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """A buffer between the reader and the committer: ``take`` returns everything that
    arrived (at most ``max_items``, and at most ``max_bytes`` as measured by ``size``) and
    waits only when nothing has; ``put`` waits while the buffer is full by either measure.
    The byte bound holds the worker's memory to bytes, not message counts (a message larger
    than ``max_bytes`` still passes, alone).

    With ``fill`` set (the reader is working through a backlog), ``take`` waits for a full
    batch, at most ``fill_seconds``: a full batch costs less per event in Postgres and Redis
    (more events share a bucket row), and with a backlog no event waits for it.
    """

    def __init__(
        self,
        max_items: int,
        fill_seconds: float = 1.0,
        max_bytes: int | None = None,
        size: Callable[[T], int] | None = None,
    ) -> None:
        self._max = max_items
        self._max_bytes = max_bytes
        self._size = size or (lambda item: 0)
        self._fill_seconds = fill_seconds
        self._items: list[T] = []
        self._sizes: list[int] = []
        self._bytes = 0
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.fill = False

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def _is_full(self) -> bool:
        over_bytes = self._max_bytes is not None and self._bytes >= self._max_bytes
        return len(self._items) >= self._max or (over_bytes and bool(self._items))

    async def put(self, item: T) -> None:
        while self._is_full():
            self._room.clear()
            await self._room.wait()
        size = self._size(item)
        self._items.append(item)
        self._sizes.append(size)
        self._bytes += size
        self._arrived.set()
        if self._is_full():
            self._full.set()

    async def take(self) -> list[T]:
        await self._arrived.wait()
        if self.fill and not self._is_full():
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._fill_seconds)
        count = self._taking()
        taken, self._items = self._items[:count], self._items[count:]
        self._bytes -= sum(self._sizes[:count])
        del self._sizes[:count]
        if not self._items:
            self._arrived.clear()
        if not self._is_full():
            self._full.clear()
        self._room.set()
        return taken

    def _taking(self) -> int:
        """How many items the next batch holds: up to both bounds, at least one."""
        count = min(len(self._items), self._max)
        if self._max_bytes is None:
            return count
        total = 0
        for i, size in enumerate(self._sizes[:count]):
            total += size
            if total > self._max_bytes:
                return max(i, 1)
        return count


class _Turns:
    """The lanes' order: one lane takes at a time (each batch is what arrived), and a batch is
    acknowledged only after the batch taken before it. Faust commits the first run of
    consecutive acknowledged offsets of a partition, and runs it over a gap of one offset or
    when nothing was committed yet: a later batch acknowledged first could commit an offset
    past an earlier batch that is not counted yet."""

    def __init__(self) -> None:
        self.taking = asyncio.Lock()
        self._last: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last.set_result(None)

    def next(self) -> tuple[asyncio.Future[None], asyncio.Future[None]]:
        """(done when the previous batch is acknowledged, to set when this one is)."""
        previous, self._last = self._last, asyncio.get_running_loop().create_future()
        return previous, self._last


def split_batch(
    messages: Sequence[RawMessage], now: datetime, future_tolerance: timedelta
) -> tuple[list[Interaction], list[DeadLetter]]:
    """Accepted events and dead letters of a batch (pure).

    "In the future" is judged against the record's broker timestamp, which is the same on
    every delivery: a batch redelivered after a crash decides exactly as the first time (the
    worker's clock, ``now``, only for a record without a timestamp).
    """
    accepted, rejected = split_with_sources(messages, now, future_tolerance)
    return [event for event, _ in accepted], rejected


def split_with_sources(
    messages: Sequence[RawMessage], now: datetime, future_tolerance: timedelta
) -> tuple[list[tuple[Interaction, RawMessage]], list[DeadLetter]]:
    """``split_batch``, each accepted event with the message it came from (pure)."""
    accepted: list[tuple[Interaction, RawMessage]] = []
    rejected: list[DeadLetter] = []
    for message in messages:
        try:
            reference = message.timestamp or now
            event = parse_event(message.value, reference, future_tolerance)
        except Rejected as exc:
            rejected.append(DeadLetter(message, str(exc)))
            continue
        accepted.append((event, message))
    return accepted, rejected


def expired_letters(
    accepted: Sequence[tuple[Interaction, RawMessage]], written: WrittenBatch
) -> list[DeadLetter]:
    """Dead letters for the messages of the events retention no longer counts (pure)."""
    ids = {(e.tenant_id, e.id) for e in written.expired}
    since = written.events_from.isoformat() if written.events_from else "?"
    return [
        DeadLetter(
            message,
            f"older than the retention: timestamp {event.timestamp.isoformat()} is before"
            f" {since}, the oldest instant whose buckets, history and event ids are kept",
        )
        for event, message in accepted
        if (event.tenant_id, event.id) in ids
    ]


class BatchProcessor:
    """Takes raw batches to Postgres (exactly once) and Redis (mirrored, fenced)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis_sink: RedisSink,
        send_dead_letters: DeadLetterSender,
        future_tolerance: timedelta,
        outbox_max_batches: int = 10_000,
        reconcile_seconds: float = 0.0,
        reconcile_groups: int = 100,
    ) -> None:
        self._pool = pool
        self._redis = redis_sink
        self._send_dead_letters = send_dead_letters
        self._future_tolerance = future_tolerance
        self._outbox_max_batches = outbox_max_batches
        self._reconcile_seconds = reconcile_seconds
        self._reconcile_groups = reconcile_groups
        self._next_reconcile = time.monotonic() + reconcile_seconds
        self._random = random.Random()
        self._mirroring: set[asyncio.Task[None]] = set()
        self._shards = own_shards(COMMIT_LANES)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def run(
        self,
        batches: GroupCommit[T],
        raw: Callable[[T], RawMessage],
        acknowledge: Callable[[T], Awaitable[object]],
    ) -> None:
        """Forever, in ``COMMIT_LANES`` lanes: take what arrived, count it, acknowledge it,
        mirror it in the background. The first lane to fail stops the others and raises."""
        turns = _Turns()
        lanes = [
            asyncio.create_task(self._lane(batches, raw, acknowledge, turns, shard))
            for shard in self._shards
        ]
        try:
            done, _ = await asyncio.wait(lanes, return_when=asyncio.FIRST_EXCEPTION)
            for lane in done:
                lane.result()  # raises the lane's error
        finally:
            for lane in lanes:
                lane.cancel()

    async def _lane(
        self,
        batches: GroupCommit[T],
        raw: Callable[[T], RawMessage],
        acknowledge: Callable[[T], Awaitable[object]],
        turns: _Turns,
        shard: int,
    ) -> None:
        mirroring: asyncio.Task[None] | None = None
        while True:
            async with turns.taking:
                items = await batches.take()
                previous, mine = turns.next()
            written = await self.commit([raw(item) for item in items], shard)
            await previous  # acknowledged in the order taken (see _Turns)
            for item in items:
                await acknowledge(item)
            mine.set_result(None)
            if mirroring is not None:  # one Redis apply per lane at a time
                await mirroring
            mirroring = self.mirror_soon(written)

    async def process(self, messages: Sequence[RawMessage]) -> None:
        """Count and mirror one batch; returns when both stores have it (tests, benchmarks)."""
        written = await self.commit(messages)
        if written is not None:
            await self.mirror(written)

    async def commit(
        self, messages: Sequence[RawMessage], shard: int | None = None
    ) -> WrittenBatch | None:
        """Return only when every message is counted or dead-lettered (safe to ack); counts
        into bucket ``shard`` (default: this process's first)."""
        shard = self._shards[0] if shard is None else shard
        started = time.perf_counter()
        metrics.EVENTS_IN.inc(len(messages))
        accepted, rejected = split_with_sources(messages, datetime.now(UTC), self._future_tolerance)
        if rejected:
            await self._dead_letter(rejected)
        written = await self._commit_isolating(accepted, shard) if accepted else None
        metrics.BATCHES.inc()
        metrics.LAST_COMMIT.set(time.time())
        metrics.BATCH_EVENTS.observe(len(messages))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        return written

    async def _dead_letter(self, rejected: Sequence[DeadLetter]) -> None:
        for letter in rejected:
            log.warning(
                "event rejected partition=%d offset=%d reason=%s",
                letter.message.partition,
                letter.message.offset,
                letter.reason,
            )
        await self._send_dead_letters(rejected)
        metrics.EVENTS_REJECTED.inc(len(rejected))
        for letter in rejected:
            metrics.DEAD_LETTERS.labels(metrics.reason_label(letter.reason)).inc()

    async def _commit_isolating(
        self, accepted: Sequence[tuple[Interaction, RawMessage]], shard: int
    ) -> WrittenBatch | None:
        """``_commit``; if an event makes Postgres refuse the batch (a constraint, a value it
        cannot store), find it by halving the batch, dead-letter it with Postgres's reason and
        count the rest. Parts counted while bisecting are mirrored here: None is returned."""
        try:
            written = await self._commit([event for event, _ in accepted], shard)
        except Exception as exc:
            if postgres_error_kind(exc) != "event":
                raise
            if len(accepted) == 1:
                [(event, message)] = accepted
                log.warning(
                    "postgres refused an event event_id=%s partition=%d offset=%d error=%r",
                    event.id,
                    message.partition,
                    message.offset,
                    exc,
                )
                await self._dead_letter([DeadLetter(message, postgres_reason(exc))])
                return None
        else:
            if written.expired:
                await self._dead_letter(expired_letters(accepted, written))
            return written
        half = len(accepted) // 2
        for part in (accepted[:half], accepted[half:]):
            counted = await self._commit_isolating(part, shard)
            if counted is not None:
                await self.mirror(counted)
        return None

    async def _commit(self, events: Sequence[Interaction], shard: int) -> WrittenBatch:
        """Write to Postgres, retrying what heals (connection lost, deadlock, shutdown):
        skipping would lose events. Any other error is raised."""
        attempt = 0
        while True:
            try:
                written = await write_batch(self._pool, events, datetime.now(UTC), shard)
            except Exception as exc:
                if postgres_error_kind(exc) != "transient":
                    raise
                attempt += 1
                metrics.STORE_RETRIES.labels("postgres", metrics.retry_cause(exc)).inc()
                delay = min(_MAX_BACKOFF_SECONDS, 0.1 * 2**attempt)
                log.warning(
                    "postgres write failed attempt=%d retry_in=%.1fs error=%r", attempt, delay, exc
                )
                await asyncio.sleep(delay)
                continue
            metrics.EVENTS_COUNTED.inc(written.new_events)
            metrics.EVENTS_DUPLICATE.inc(written.duplicates)
            return written

    def mirror_soon(self, written: WrittenBatch | None) -> asyncio.Task[None] | None:
        """Mirror in the background (the next commit overlaps it); the task, if any."""
        if written is None or written.batch_id is None:
            return None
        task = asyncio.create_task(self.mirror(written))
        self._mirroring.add(task)
        task.add_done_callback(self._mirroring.discard)
        return task

    async def mirror(self, written: WrittenBatch) -> None:
        """Apply to Redis now; on any Redis trouble the outbox keeps it for the catch-up loop."""
        if written.batch_id is None:
            return
        epoch = self._redis.epoch
        try:
            outcome = await self._redis.apply(written.batch_id, written.buckets, epoch)
            if outcome != NOT_READY and epoch is not None:
                await outbox.forget(self._pool, [written.batch_id], epoch)
        except Exception as exc:  # Redis or Postgres down: the outbox row stays for later.
            metrics.STORE_RETRIES.labels("redis", metrics.retry_cause(exc)).inc()
            log.warning("redis apply deferred batch_id=%d error=%r", written.batch_id, exc)

    async def drain_outbox(self, limit: int = 50) -> int:
        """Apply every batch still in the outbox; returns how many were cleared.

        Stops early when Redis is not current: ``resync`` then brings it back.
        """
        epoch = self._redis.epoch
        batches = await outbox.pending(self._pool, limit)
        done: list[int] = []
        try:
            for batch_id, buckets in batches:
                if await self._redis.apply(batch_id, buckets, epoch) == NOT_READY:
                    break
                done.append(batch_id)
        finally:
            if epoch is not None:
                await outbox.forget(self._pool, done, epoch)
        return len(done)

    async def bound_outbox(self) -> None:
        """Keep the outbox within its bound while Redis is away: past it, drop it all with a
        new epoch (no Redis is trusted before a resync copies the counts from Postgres)."""
        left = await outbox.backlog(self._pool)
        if left > self._outbox_max_batches:
            dropped = await outbox.discard(self._pool)
            metrics.OUTBOX_DISCARDED.inc(dropped)
            log.warning(
                "redis outbox over its bound, dropped; redis is resynced when back"
                " batches=%d max=%d",
                dropped,
                self._outbox_max_batches,
            )
            left = 0
        metrics.OUTBOX_PENDING.set(left)

    async def finish_mirroring(self, seconds: float) -> int:
        """Before the worker exits: Redis gets every batch it committed (the mirror in flight,
        then what the outbox holds), else the next worker would find Redis behind Postgres.
        Redis trouble is retried until ``seconds`` have passed; what is left then stays in the
        outbox for the next worker. Returns how many batches are left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        if self._mirroring:
            await asyncio.wait(list(self._mirroring), timeout=seconds)  # never raises
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._catch_up(reconcile=False)  # a Redis not current is resynced
                    while await self.drain_outbox():
                        pass
                break  # empty, or Redis still not ready (the next worker's to fill)
            except TimeoutError:
                break
            except Exception as exc:  # e.g. a connection Redis dropped: a new one may work
                log.warning("redis catch-up before exit failed, retrying error=%r", exc)
                await asyncio.sleep(0.2)
        try:
            return len(await outbox.pending(self._pool, 1_000))
        except Exception:  # Postgres gone too: nothing more to say
            return -1

    async def keep_redis_exact(self) -> None:
        """Periodic: resync a Redis that is not provably current (core/mirror.py), then apply
        whatever the outbox still holds."""
        try:
            await self._catch_up(reconcile=True)
        except Exception as exc:  # the next tick tries again
            log.warning("redis catch-up failed error=%r", exc)
        try:  # also (above all) while Redis is unreachable
            await self.bound_outbox()
        except Exception as exc:
            log.warning("redis outbox check failed error=%r", exc)

    async def _catch_up(self, reconcile: bool) -> None:
        state = await mirror_state(self._pool)
        self._redis.epoch = state.epoch
        metrics.REDIS_EPOCH.set(epoch_number(state.epoch))
        reason = await self._redis.why_not_current(state)
        if reason is None and reconcile and self._reconcile_due():
            reason = await self._reconcile()
        if reason is not None:
            metrics.REDIS_RESYNCS.labels(reason).inc()
            log.warning("redis not provably current, resyncing reason=%s", reason)
            await self._redis.resync(self._pool)
        await self.drain_outbox()

    def _reconcile_due(self) -> bool:
        if not self._reconcile_seconds or time.monotonic() < self._next_reconcile:
            return False
        self._next_reconcile = time.monotonic() + self._reconcile_seconds
        return True

    async def _reconcile(self) -> str | None:
        """Compare a sample with Postgres; "mismatch" (a resync's reason) if any group differs."""
        sample = await self._redis.reconcile(self._pool, self._reconcile_groups, self._random)
        if sample is None:
            return None
        metrics.RECONCILE_CHECKS.inc(sample.compared)
        if not sample.mismatched:
            return None
        metrics.RECONCILE_MISMATCHES.inc(len(sample.mismatched))
        log.warning(
            "redis differs from postgres bucket=%s groups=%d of %d first=%s",
            sample.bucket,
            len(sample.mismatched),
            sample.compared,
            sample.mismatched[0],
        )
        return "mismatch"
