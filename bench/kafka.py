"""Broker chores of the benchmarks: create a topic, preload it fast, drain it with plain aiokafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

_BATCH_BYTES = 512 * 1024


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` (the worker must never auto-create it smaller)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Delete ``topics`` (those that do not exist are ignored by the broker's answer)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def preload(
    bootstrap: str, topic: str, partitions: int, messages: Iterable[tuple[bytes, bytes]]
) -> int:
    """Publish (key, value) pairs with Kafka's default key partitioner, in large batches.

    Batches are built by hand (``create_batch``): per-message ``send`` would make the preload
    take longer than the measurement.
    """
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, max_batch_size=_BATCH_BYTES, linger_ms=5
    )
    await producer.start()
    sent = 0
    try:
        builders = [producer.create_batch() for _ in every]
        pending: list[asyncio.Future[object]] = []
        for key, value in messages:
            partition = partitioner(key, every, every)
            if builders[partition].append(key=key, value=value, timestamp=None) is None:
                pending.append(
                    await producer.send_batch(builders[partition], topic, partition=partition)
                )
                builders[partition] = producer.create_batch()
                builders[partition].append(key=key, value=value, timestamp=None)
                if len(pending) >= 16:
                    await asyncio.gather(*pending)
                    pending.clear()
            sent += 1
        for partition, builder in enumerate(builders):
            if builder.record_count():
                pending.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The current end offset of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


@dataclass(frozen=True, slots=True)
class Drained:
    """What a consumer read and how fast.

    ``seconds`` runs from the arrival of the first batch to that of the last, and ``events``
    counts the messages after the first batch: what arrived within those seconds.
    """

    events: int
    seconds: float
    startup_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def drain(
    bootstrap: str,
    topic: str,
    events: int,
    group: str,
    on_first: Callable[[], None] | None = None,
) -> Drained:
    """Read ``events`` messages from the start of ``topic`` as one group member, plain aiokafka.

    The ceiling for any Kafka consumer in Python on this broker: no processing, offsets
    committed as usual (auto commit). ``on_first`` is called when the first batch arrives.
    """
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
        # Tansu holds a group's first join for half the session timeout (bench/README):
        # the worker's 6 s, so every consumer here joins in about 3 s.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1500,
    )
    await consumer.start()
    seen = in_first = 0
    first = 0.0
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(messages) for messages in batches.values())
            if batches and not first:
                first, in_first = time.perf_counter(), seen
                if on_first is not None:
                    on_first()
        last = time.perf_counter()
    finally:
        await consumer.stop()
    return Drained(seen - in_first, last - first, first - started)
