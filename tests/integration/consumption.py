"""Where a worker's consumer group stands: committed offsets, the partitions it was assigned
(read from its log) and the records of the dead-letter topic."""

from __future__ import annotations

import re
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from core.config import Settings
from tests.support import wait_until

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


async def committed_offsets(settings: Settings) -> dict[int, int | None]:
    """The worker group's committed offset of each partition of the topic (None: none yet)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(settings.topic, p))
            for p in range(settings.topic_partitions)
        }
    finally:
        await consumer.stop()


async def offsets_all_committed(settings: Settings) -> bool:
    """Whether the worker's group has committed every partition of the topic up to its end."""
    committed = await committed_offsets(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic, p) for p in committed]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return all(not ends[tp] or (committed[tp.partition] or 0) >= ends[tp] for tp in partitions)


async def dead_letters(settings: Settings, expected: int, timeout: float = 60) -> list[Any]:
    """Every record of the dead-letter topic (waits until ``expected`` of them arrived, then
    reads a second more, so a surplus shows in the caller's assert)."""
    consumer = AIOKafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def got_all() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
            return len(records) >= expected

        await wait_until(
            got_all, timeout, message=lambda: f"{len(records)}/{expected} dead letters"
        )
        for part in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(part)
    finally:
        await consumer.stop()
    return records
