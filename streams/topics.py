"""The service's topics, declared once: the worker's Faust app declares them from
``service_topics``, and ``ensure_topics`` creates them before a worker starts (else the broker
auto-creates them with its default partition count)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from core.config import Settings

log = logging.getLogger(__name__)

DLQ_PARTITIONS = 1


def service_topics(settings: Settings) -> list[NewTopic]:
    """The interactions topic with its configured partitions, and the dead-letter topic."""
    return [
        NewTopic(settings.topic, settings.topic_partitions, 1),
        NewTopic(settings.dlq_topic, DLQ_PARTITIONS, 1),
    ]


async def ensure_topics(
    bootstrap_servers: str, topics: list[NewTopic], wait_seconds: float = 30.0
) -> list[str]:
    """Create each topic that does not exist yet; returns the names created.

    Retries for ``wait_seconds`` while the broker is still starting.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t.name not in existing]
            if missing:
                await _create(admin, missing)
            return [t.name for t in missing]
        except (KafkaConnectionError, OSError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Kafka at {bootstrap_servers} not reachable within {wait_seconds:.0f}s: {exc!r}"
                ) from exc
            log.info(
                "kafka not reachable yet, retrying bootstrap=%s error=%r", bootstrap_servers, exc
            )
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


async def _create(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    try:
        response = await admin.create_topics(topics)
    except TopicAlreadyExistsError:  # created concurrently by another process: fine
        return
    for error in getattr(response, "topic_errors", ()):
        name, code = error[0], error[1]
        if code not in (0, TopicAlreadyExistsError.errno):
            raise KafkaError(f"creating topic {name!r} failed with error code {code}: {error[2:]}")
