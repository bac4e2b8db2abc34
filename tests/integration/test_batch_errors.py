"""Issue 13: errors off the tested paths never acknowledge a batch that was not counted.

Every test ends with the full comparison of both stores with the independent recount.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import orjson

from core.config import Settings
from streams.exits import EXIT_BATCH_NOT_COUNTED, EXIT_CONFIG
from tests.integration.consumption import committed_offsets, dead_letters, offsets_all_committed
from tests.integration.faults import own_postgres
from tests.integration.publishing import Publisher, Raw, wave
from tests.integration.stores import wait_for_exact_stores
from tests.recount import distinct_events, expected_buckets
from tests.support import produce, wait_until

REFUSED_CUSTOMER = "C-013"
REFUSED_CONSTRAINT = "no_customer_13"


async def execute(settings: Settings, sql: str) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_dead_letter_too_large_for_the_producer_goes_without_its_value(
    settings: Settings, start_worker
) -> None:
    """A 4.5 MB message is not JSON; with its headers it exceeds the worker's producer limit
    (4 MiB): it is dead-lettered without the value (its source position says where it is),
    and every event around it is counted."""
    first, second = wave(300, seed=71, prefix="a"), wave(300, seed=72, prefix="b")
    huge = b"x" * 4_500_000
    worker = start_worker(settings)
    async with Publisher(settings) as publisher:
        await publisher.send([*first.messages, Raw(b"k", huge), *second.messages])
    events = distinct_events(first.valid + second.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    [letter] = await dead_letters(settings, 1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert letter.value is None
    assert headers["dlq.value.omitted"] == str(len(huge))
    assert headers["dlq.reason"].startswith("not JSON")
    assert worker.running and worker.starts == 1


async def test_a_database_error_that_does_not_heal_stops_the_worker_and_loses_nothing(
    settings: Settings, start_worker
) -> None:
    """A table renamed under the worker (UndefinedTable: waiting cannot help, and no event is
    to blame): the worker says why and exits non-zero, acknowledging nothing of the batch;
    once the table is back and the worker restarted, everything is counted exactly."""
    first, second = wave(400, seed=73, prefix="a"), wave(400, seed=74, prefix="b")
    worker = start_worker(settings)
    async with Publisher(settings) as publisher:
        await publisher.send(first.messages)
        counted = distinct_events(first.valid)
        await wait_for_exact_stores(settings, expected_buckets(counted), len(counted))
        await wait_until(lambda: offsets_all_committed(settings), 30, 0.2, "offsets not committed")
        await execute(settings, "ALTER TABLE redis_outbox RENAME TO redis_outbox_moved")
        sent = await publisher.send(second.messages)

    await wait_until(
        lambda: not worker.running,
        60,
        0.2,
        lambda: f"the worker kept running:\n{worker.log_tail()}",
    )
    assert worker.returncode == EXIT_BATCH_NOT_COUNTED
    # the worker logs JSON lines: the reason is in the CRITICAL record's message
    records = [orjson.loads(line) for line in worker.logs().splitlines() if line.startswith("{")]
    stopping = [r["message"] for r in records if r.get("level") == "CRITICAL"]
    assert any(
        "batch not counted" in m and 'relation "redis_outbox" does not exist' in m for m in stopping
    ), stopping
    first_of_second = {}
    for meta in sent:
        first_of_second.setdefault(meta.partition, meta.offset)
    for partition, offset in first_of_second.items():
        committed = (await committed_offsets(settings))[partition]
        assert committed is None or committed <= offset, f"partition {partition} acknowledged"

    await execute(settings, "ALTER TABLE redis_outbox_moved RENAME TO redis_outbox")
    worker.start()
    events = distinct_events(first.valid + second.valid)
    await wait_for_exact_stores(settings, expected_buckets(events), len(events))
    assert worker.running


async def test_events_postgres_refuses_are_dead_lettered_with_its_reason_and_the_rest_counted(
    settings: Settings, start_worker
) -> None:
    """No valid event makes Postgres refuse a batch (NUL, lengths and timestamp ranges are
    checked by the parser), so a CHECK constraint on one customer stands in for such an
    event: its events are isolated by halving the batch, dead-lettered with the constraint's
    message, and every other event is counted exactly."""
    await execute(
        settings,
        f"ALTER TABLE interaction_history ADD CONSTRAINT {REFUSED_CONSTRAINT}"
        f" CHECK (customer_id <> '{REFUSED_CUSTOMER}')",
    )
    traffic = wave(3000, seed=76, prefix="r")
    refused = [e for e in traffic.valid if e["customerId"] == REFUSED_CUSTOMER]
    kept = distinct_events([e for e in traffic.valid if e["customerId"] != REFUSED_CUSTOMER])
    assert 20 < len(refused) < 200
    worker = start_worker(settings)
    await produce(settings, traffic.messages)

    await wait_for_exact_stores(settings, expected_buckets(kept), len(kept), timeout=90)
    letters = await dead_letters(settings, len(refused))
    assert len(letters) == len(refused)
    assert {orjson.loads(r.value)["id"] for r in letters} == {e["id"] for e in refused}
    for record in letters:
        reason = dict(record.headers)["dlq.reason"].decode()
        assert reason.startswith("postgres refused the event (23514)"), reason
        assert REFUSED_CONSTRAINT in reason
    assert worker.running and worker.starts == 1


async def test_a_worker_given_a_wrong_password_exits_with_the_reason(
    settings: Settings, start_worker, tmp_path: Path
) -> None:
    password = "right-" + os.urandom(8).hex()
    server = own_postgres(tmp_path / "own", password=password)
    try:
        wrong = server.url.replace(password, "wrong-password")
        worker = start_worker(settings.model_copy(update={"database_url": wrong}))
        await wait_until(lambda: not worker.running, 60, 0.2, lambda: worker.log_tail())
    finally:
        server.stop()
    assert worker.returncode == EXIT_CONFIG
    log = worker.logs()
    assert "postgres refused the worker (InvalidPasswordError" in log, worker.log_tail()
    assert 'password authentication failed for user "postgres"' in log
    assert "wrong-password" not in log
    assert "not reachable yet" not in log
