"""Issue 3: events through a real broker and worker end as exactly the recounted buckets,
in Postgres and in Redis, with every invalid message in the dead-letter topic."""

from __future__ import annotations

from collections import Counter

from core.config import Settings
from tests.integration.consumption import dead_letters
from tests.integration.stores import wait_for_exact_stores
from tests.integration.traffic import make_traffic
from tests.recount import distinct_events, expected_buckets
from tests.support import produce


async def test_every_bucket_in_both_stores_equals_an_independent_recount(
    settings: Settings, start_worker
) -> None:
    traffic = make_traffic(3000)
    start_worker(settings)
    await produce(settings, traffic.messages)

    distinct = distinct_events(traffic.valid)
    assert len(distinct) < len(traffic.valid), "the traffic must contain duplicates"
    await wait_for_exact_stores(settings, expected_buckets(distinct), len(distinct))


async def test_invalid_messages_reach_the_dead_letter_topic_with_reason_and_origin(
    settings: Settings, start_worker
) -> None:
    traffic = make_traffic(200, invalid_count=18)
    start_worker(settings)
    sent = await produce(settings, traffic.messages)
    origin = {
        (meta.partition, meta.offset): message
        for meta, message in zip(sent, traffic.messages, strict=True)
        if isinstance(message, bytes)
    }

    letters = await dead_letters(settings, len(traffic.invalid))
    assert len(letters) == len(traffic.invalid)
    for record in letters:
        headers = {k: v.decode() for k, v in record.headers}
        source = (int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"]))
        assert headers["dlq.source.topic"] == settings.topic
        assert record.value == origin[source], "the dead letter keeps the original bytes"
        assert headers["dlq.reason"], "every dead letter says why"
    reasons = Counter(dict(r.headers)["dlq.reason"].decode().split(":")[0] for r in letters)
    assert reasons["not JSON"] == 4  # 'not json at all' and invalid UTF-8, twice each
    distinct = distinct_events(traffic.valid)
    await wait_for_exact_stores(settings, expected_buckets(distinct), len(distinct))


async def test_two_workers_in_one_group_stay_exact(settings: Settings, start_worker) -> None:
    traffic = make_traffic(4000, seed=11)
    start_worker(settings)
    start_worker(settings)
    await produce(settings, traffic.messages)

    distinct = distinct_events(traffic.valid)
    await wait_for_exact_stores(settings, expected_buckets(distinct), len(distinct))


# A worker killed mid-ingest: tests/integration/test_reliability.py, the one kill test
# (SIGKILL at random instants, restarted each time, exact afterwards).
