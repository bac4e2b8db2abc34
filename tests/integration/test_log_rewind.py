"""Issue 13, item 5 (the worker's side): a partition whose log went backwards is read again
from the start.

A topic deleted and created again under a running worker (on any Kafka; the embedded broker
losing its log is the same case) leaves the group's committed offsets above the new log's
end. Without the rewind the worker drops the new log's first messages (Faust skips offsets
below the one it last read) and never counts them. Each test ends with the full recount
comparison of both stores and every API answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from core.config import Settings
from core.periods import STORED_PERIODS
from streams.topics import ensure_topics, service_topics
from tests.conftest import MakeSettings
from tests.integration.api_oracle import ApiClient, Recount, assert_api_matches_recount
from tests.integration.consumption import offsets_all_committed
from tests.integration.credentials import make_keys
from tests.integration.faults import Restartable, own_kafka
from tests.integration.publishing import Publisher, wave
from tests.integration.stores import wait_for_exact_stores
from tests.recount import Event, distinct_events, expected_buckets
from tests.support import wait_until

TENANTS = ("default", "acme")
REWOUND = "partition log went backwards"


@pytest.fixture
def kafka_server(tmp_path: Path) -> Iterator[Restartable]:
    """A Tansu broker of this test's own. Requested before the services so it outlives them."""
    server = own_kafka(tmp_path / "own")
    yield server
    server.stop()


async def _exact_everywhere(settings: Settings, events: list[Event], api: ApiClient) -> None:
    expected = expected_buckets(events)
    await wait_for_exact_stores(settings, expected, len(events))
    assert any(k[2] in STORED_PERIODS for k in expected)
    await assert_api_matches_recount(api, Recount(events), period_source="redis")


async def _topic_exists(settings: Settings) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        return settings.topic in await admin.list_topics()
    finally:
        await admin.close()


async def _delete_topic(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic])
    finally:
        await admin.close()


async def test_a_topic_deleted_and_created_again_under_a_running_worker_is_read_from_its_start(
    kafka_server: Restartable, make_settings: MakeSettings, start_worker, start_api
) -> None:
    settings = await make_settings(kafka_bootstrap_servers=kafka_server.url)
    worker = start_worker(settings)
    made = await make_keys(settings.database_url, TENANTS)
    api = ApiClient((await start_api(settings)).url, {t: made[f"viewer:{t}"] for t in TENANTS})
    first = wave(2400, seed=91, prefix="a")  # about 300 messages per partition
    before = distinct_events(first.valid)
    async with Publisher(settings) as publisher:
        await publisher.send(first.messages)
    await _exact_everywhere(settings, before, api)
    await wait_until(lambda: offsets_all_committed(settings), 30, 0.2, "offsets never committed")

    await _delete_topic(settings)

    async def gone() -> bool:
        return not await _topic_exists(settings)

    await wait_until(gone, 30, 0.2, "the topic was never deleted")
    await ensure_topics(settings.kafka_bootstrap_servers, service_topics(settings))
    # About 100 messages per partition, published at once: every new log ends below the
    # offsets the group committed on the old one.
    second = wave(600, seed=92, prefix="b", republish=first.valid[:200])
    async with Publisher(settings) as publisher:
        await publisher.send(second.messages)
    after = distinct_events(first.valid + second.valid)
    await _exact_everywhere(settings, after, api)
    assert REWOUND in worker.logs()
    assert worker.running and worker.starts == 1, "no restart was needed"


async def test_events_published_right_after_a_broker_restart_are_all_counted(
    kafka_server: Restartable, make_settings: MakeSettings, start_worker, start_api
) -> None:
    """The embedded broker forgets its log and the group's offsets; events are published at
    once, before the worker has joined its group again (the README's former known limit)."""
    settings = await make_settings(kafka_bootstrap_servers=kafka_server.url)
    worker = start_worker(settings)
    made = await make_keys(settings.database_url, TENANTS)
    api = ApiClient((await start_api(settings)).url, {t: made[f"viewer:{t}"] for t in TENANTS})
    first = wave(2400, seed=101, prefix="a")
    before = distinct_events(first.valid)
    async with Publisher(settings) as publisher:
        await publisher.send(first.messages)
    await _exact_everywhere(settings, before, api)
    await wait_until(lambda: offsets_all_committed(settings), 30, 0.2, "offsets never committed")

    kafka_server.stop()
    kafka_server.start()  # in-memory storage: topics, offsets and groups are gone
    await ensure_topics(settings.kafka_bootstrap_servers, service_topics(settings))
    second = wave(600, seed=102, prefix="b", republish=first.valid[:200])
    async with Publisher(settings) as publisher:
        await publisher.send(second.messages)
    after = distinct_events(first.valid + second.valid)
    await _exact_everywhere(settings, after, api)
    assert worker.running and worker.starts == 1, "no restart was needed"
