"""The API's publisher against a broker that restarted empty (Tansu keeps everything in memory).

An empty broker hands producer ids out again from 1: a producer that outlived the restart then
shares its id with the first producer that started after it, and the broker takes its batches
for duplicates of the other's. Acknowledged as "duplicate", they were never written: the
publisher must answer that as not acknowledged (503), and the retry must be written.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from api.publisher import BrokerUnavailable, EventPublisher
from streams.topics import ensure_topics
from tests.integration.faults import own_kafka
from tests.support import wait_until


def _messages(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    return [(b"C", orjson.dumps({"id": f"{prefix}{i}"})) for i in range(count)]


async def _ids(bootstrap: str, topic: str) -> list[str]:
    """Every id in the topic's one partition, from the beginning to the current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        ids: list[str] = []
        while await consumer.position(tp) < end:
            for messages in (await consumer.getmany(tp, timeout_ms=1000)).values():
                ids += [orjson.loads(m.value)["id"] for m in messages]
        return ids
    finally:
        await consumer.stop()


async def test_a_duplicate_of_another_producers_batch_is_a_503_and_the_retry_is_written(
    tmp_path: Path,
) -> None:
    kafka = own_kafka(tmp_path)
    topic = f"t-{uuid.uuid4().hex[:8]}"
    publisher = EventPublisher(kafka.url, topic, timeout=2.0)
    other: AIOKafkaProducer | None = None
    try:
        await ensure_topics(kafka.url, [NewTopic(topic, 1, 1)])
        await publisher.start()
        await publisher.publish(_messages("before-", 5))  # producer id 1, next sequence 5

        kafka.kill()  # nothing published while it is away: the producer is not replaced
        kafka.start()
        await ensure_topics(kafka.url, [NewTopic(topic, 1, 1)])
        # The first producer on the empty broker gets id 1 too, and writes sequences 0-9.
        other = AIOKafkaProducer(bootstrap_servers=kafka.url, enable_idempotence=True)
        await other.start()
        for key, value in _messages("other-", 10):
            await other.send_and_wait(topic, value=value, key=key, partition=0)

        # Our next batch (id 1, sequence 5) is a "duplicate" of the other producer's: the
        # broker writes nothing. Acknowledging it would lose these events.
        with pytest.raises(BrokerUnavailable):
            await publisher.publish(_messages("after-", 3))

        async def retried() -> bool:
            try:
                await publisher.publish(_messages("after-", 3))
            except BrokerUnavailable:
                return False  # the replacement producer is still connecting
            return True

        await wait_until(retried, 30, 0.2, "the publisher never published again")
        held = await _ids(kafka.url, topic)
        # "before" went with the broker's memory; the rest is there exactly once.
        assert sorted(held) == sorted(
            [f"other-{i}" for i in range(10)] + ["after-0", "after-1", "after-2"]
        )
    finally:
        if other is not None:
            await other.stop()
        await publisher.stop()
        kafka.stop()


async def test_a_producer_replaced_after_a_503_stops_for_good(tmp_path: Path) -> None:
    """What a failed producer still holds is dropped, not retried in the background: it
    would be sent under a producer id that a restarted broker gives to its replacement."""
    kafka = own_kafka(tmp_path)
    topic = f"t-{uuid.uuid4().hex[:8]}"
    publisher = EventPublisher(kafka.url, topic, timeout=1.0)
    try:
        await ensure_topics(kafka.url, [NewTopic(topic, 1, 1)])
        await publisher.start()
        await publisher.publish(_messages("before-", 5))
        failed = publisher._producer
        assert failed is not None

        kafka.kill()  # (SIGTERM waits for our open connection: 5 s)
        with pytest.raises(BrokerUnavailable):
            await publisher.publish(_messages("during-", 3))
        assert publisher._producer is not failed, "a producer that failed is replaced"
        # Stopped within the publish timeout, the broker still away: its sender no longer runs
        # (before, stop() waited to deliver what it held, was cut short, and left it running).
        await wait_until(lambda: failed._sender.sender_task.done(), 5, 0.1, "still sending")
        assert failed._closed
    finally:
        await publisher.stop()
        kafka.stop()
