"""Publishing interactions: lines of a JSON-lines file, or seeded synthetic events, at a rate.

Each message is keyed by its ``customerId`` (so one customer's events stay in order on one
partition). Lines from a file are sent as they are, byte for byte: a malformed line reaches
the worker and its dead-letter topic exactly as a real producer's would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import orjson
from aiokafka import AIOKafkaProducer

Message = tuple[bytes | None, bytes]

# Messages in flight before the producer waits for acknowledgements: bounds memory.
MAX_IN_FLIGHT = 20_000
# How often a rate-limited producer wakes up to send what is due.
TICK_SECONDS = 0.02


def customer_key(value: bytes) -> bytes | None:
    """The ``customerId`` of a JSON object as the Kafka key; None when there is none."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("customerId"), str):
        return str(parsed["customerId"]).encode()
    return None


def lines_of(stream: IO[bytes]) -> Iterator[Message]:
    """One message per non-blank line of ``stream``, the trailing newline removed."""
    for line in stream:
        value = line.rstrip(b"\r\n")
        if value.strip():
            yield customer_key(value), value


def synthetic_messages(
    seed: int, catalog_seed: int, backfill_days: float, clock: Callable[[], datetime]
) -> Iterator[Message]:
    """Endless seeded synthetic events, stamped up to ``backfill_days`` before ``clock()``."""
    from cli.synthetic import SyntheticEvents, encode, make_catalog

    events = SyntheticEvents(seed, clock(), catalog=make_catalog(catalog_seed), days=backfill_days)
    while True:
        for event in events.batch(256, now=clock()):
            yield encode(event)


@dataclass
class ProduceStats:
    sent: int = 0
    acknowledged: int = 0


def utc_now() -> datetime:
    return datetime.now(UTC)


async def paced(
    messages: Iterable[Message], rate: float, count: int | None
) -> AsyncIterator[list[Message]]:
    """Chunks of ``messages``, ``count`` at most, released at ``rate`` per second (0: at once)."""
    source = iter(messages)
    started = time.monotonic()
    released = 0
    while count is None or released < count:
        if rate > 0:
            due = int((time.monotonic() - started) * rate) - released
            if due <= 0:
                await asyncio.sleep(TICK_SECONDS)
                continue
        else:
            due = 1000
        if count is not None:
            due = min(due, count - released)
        chunk = [message for _, message in zip(range(due), source, strict=False)]
        if not chunk:
            return
        released += len(chunk)
        yield chunk


async def publish(
    bootstrap_servers: str,
    topic: str,
    chunks: AsyncIterator[list[Message]],
    on_progress: Callable[[ProduceStats], None] = lambda _: None,
) -> ProduceStats:
    """Send every chunk to ``topic``; returns once all are acknowledged by the broker."""
    stats = ProduceStats()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    pending: list[asyncio.Future[object]] = []
    try:
        async for chunk in chunks:
            for key, value in chunk:
                pending.append(await producer.send(topic, value=value, key=key))
            stats.sent += len(chunk)
            if len(pending) >= MAX_IN_FLIGHT or (pending and pending[0].done()):
                stats.acknowledged += await _settle(pending, wait=len(pending) >= MAX_IN_FLIGHT)
            on_progress(stats)
        stats.acknowledged += await _settle(pending, wait=True)
        on_progress(stats)
    finally:
        await producer.stop()
    return stats


async def _settle(pending: list[asyncio.Future[object]], *, wait: bool) -> int:
    """Drop acknowledged sends from the front of ``pending`` (all of them if ``wait``)."""
    if wait:
        await asyncio.gather(*pending)
        done = len(pending)
    else:
        done = next((i for i, future in enumerate(pending) if not future.done()), len(pending))
        for future in pending[:done]:
            future.result()  # raises the delivery error, if any
    del pending[:done]
    return done
