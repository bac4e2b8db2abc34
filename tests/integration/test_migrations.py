"""Schema changes migrate: a database made by the first schema is upgraded in place and
answers exactly the numbers it answered before, then goes on counting."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import asyncpg

from core.config import Settings
from core.db import migrate, migration_files
from core.periods import STORED_PERIODS
from core.schema import COUNTER_COLUMNS, STATUSES, TYPE_KEY_PATTERN, Category, Classification
from streams import outbox
from streams.events import Interaction
from streams.postgres_sink import write_batch
from streams.retention import run_retention
from tests.conftest import MakeSettings
from tests.integration import schema1
from tests.integration.api_oracle import ApiClient, Recount, assert_api_matches_recount
from tests.integration.credentials import make_keys
from tests.integration.stores import postgres_buckets, postgres_outcomes, wait_for_exact_stores
from tests.integration.traffic import CUSTOM_TYPES, custom_traffic, make_traffic
from tests.recount import Event, distinct_events, expected_buckets, expected_outcomes
from tests.support import produce


async def test_a_schema1_database_migrates_in_place_and_answers_the_same_numbers(
    empty_database: str, make_settings: MakeSettings, start_worker, start_api
) -> None:
    dsn = empty_database
    traffic = make_traffic(2500, seed=31, tenants=("default", "acme"))
    events = distinct_events(traffic.valid)
    conn = await asyncpg.connect(dsn)
    try:
        assert await migrate(conn, up_to=1) == ["0001_initial.sql"]
        await schema1.fill(conn, events)
        before = await schema1.buckets(conn)
        # A batch committed but not yet in Redis when the old worker stopped: its outbox row.
        today = datetime.now(UTC).date()
        pending = {k: v for k, v in before.items() if k[3] in (today, date.min)}
        payload = schema1.outbox_payload(pending)
        await conn.execute("INSERT INTO redis_outbox (deltas) VALUES ($1)", payload)
        await conn.execute("INSERT INTO redis_outbox (deltas) VALUES ($1)", payload)
        await conn.execute("DELETE FROM redis_outbox WHERE id = 1")

        assert before == expected_buckets(events)  # the old schema's numbers, exact
        later = [name for version, name, _ in migration_files() if version > 1]
        assert await migrate(conn) == later  # 0002_write_path.sql, then the later ones
        assert await migrate(conn) == []  # applied once

        # every number the old schema stored, the new one answers (custom types per type too)
        assert await postgres_buckets(dsn) == before
        assert await postgres_outcomes(dsn) == expected_outcomes(events)
        assert await conn.fetchval("SELECT count(*) FROM interaction_history") == len(events)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            [(batch_id, hot)] = await outbox.pending(pool, 10)
        finally:
            await pool.close()
        assert batch_id == 2  # the same batch id: markers already in Redis still fence it
        converted = {
            (b.tenant_id, b.dimension, b.period.value, b.start, group): tuple(counts)
            for b in hot
            for group, counts in zip(b.groups, b.counts, strict=True)
        }
        assert converted == pending
        assert await conn.fetchval("SELECT nextval('redis_batch_id')") == 3
        await conn.execute("DELETE FROM redis_outbox")  # its counts are in the buckets already
    finally:
        await conn.close()

    # The migrated database behind a worker and the API: the same answers from every store,
    # then new events counted on top.
    template = await make_settings()
    settings = Settings(**{**template.model_dump(), "database_url": dsn})
    start_worker(settings)
    api = await start_api(settings)
    keys = await make_keys(dsn)
    client = ApiClient(api.url, {"default": keys["viewer:default"], "acme": keys["viewer:acme"]})
    await assert_api_matches_recount(client, Recount(events), period_source="redis")

    more = make_traffic(1500, seed=32, tenants=("default", "acme"))
    for event in more.valid:
        event["id"] = "after-migration-" + event["id"]
    await produce(settings, more.messages)
    everything = distinct_events(traffic.valid + more.valid)
    await wait_for_exact_stores(settings, expected_buckets(everything), len(everything))
    await assert_api_matches_recount(client, Recount(everything), period_source="redis")


async def test_a_schema4_database_counts_its_past_custom_types_in_place(
    empty_database: str,
) -> None:
    """0005: past events of types without a counter get their per-type counts from history;
    every bucket keeps its numbers; an outbox row of the old form still decodes."""
    dsn = empty_database
    events = distinct_events(custom_traffic(1500, seed=41).valid)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, up_to=1)
        await schema1.fill(conn, events)
        await migrate(conn, up_to=4)
        before = await postgres_buckets(dsn)
        await conn.execute(
            "INSERT INTO redis_outbox (batch_id, tenant_id, dimension, period, bucket_start,"
            " groups, counts) VALUES (9, 'default', 'action', 'alltime', '-infinity',"
            " '{a}', '{{1,0,0,0,0,1,0}}')"
        )
        applied = await migrate(conn)  # 0005_outcome_types.sql, then the later ones
        assert applied[0] == "0005_outcome_types.sql"
        assert applied == [name for version, name, _ in migration_files() if version > 4]
        assert await postgres_buckets(dsn) == before == expected_buckets(events)
        assert await postgres_outcomes(dsn) == expected_outcomes(events)
        assert {t for _, t in expected_outcomes(events)} == {*CUSTOM_TYPES, "hover_3s"}
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            [(batch_id, [bucket])] = await outbox.pending(pool, 10)
        finally:
            await pool.close()
        assert (batch_id, bucket.groups, bucket.outcome_groups) == (9, ["a"], [])
    finally:
        await conn.close()


def _quoted(definition: str) -> set[str]:
    return set(re.findall(r"'([^']*)'::text", definition))


async def test_the_migrations_agree_with_core_schema(empty_database: str) -> None:
    """The CHECK constraints and counter columns the migrations make are the ones
    core/schema.py declares."""
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn)
        checks = {
            r["conname"]: r["def"]
            for r in await conn.fetch(
                "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
                " WHERE contype = 'c'"
            )
        }
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'interaction_bucket' AND data_type = 'bigint'"
            " ORDER BY ordinal_position"
        )
    finally:
        await conn.close()
    assert _quoted(checks["outcome_type_classification_check"]) == set(Classification)
    assert _quoted(checks["outcome_type_category_check"]) == set(Category)
    assert _quoted(checks["outcome_type_status_check"]) == set(STATUSES)
    assert f"^{TYPE_KEY_PATTERN}$" in checks["outcome_type_key_check"]
    assert [r[0] for r in columns] == list(COUNTER_COLUMNS.values())
    stored = {p.value for p in STORED_PERIODS}
    assert _quoted(checks["interaction_bucket_period_check"]) == stored
    assert _quoted(checks["interaction_bucket_outcome_period_check"]) == stored


async def test_a_schema7_history_becomes_the_first_partition_and_its_ids_stay_fenced(
    empty_database: str,
) -> None:
    """0008: the history table is attached as the first partition (no copy), its ids fill
    the fence; every number stays; an old id published again is not counted, a new one is;
    a retention run long after drops the old partition whole and nothing else."""
    dsn = empty_database
    traffic = make_traffic(2000, seed=81, tenants=("default", "acme"))
    events = distinct_events(traffic.valid)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, up_to=1)
        await schema1.fill(conn, events)
        await migrate(conn, up_to=7)
        before = await postgres_buckets(dsn)
        assert before == expected_buckets(events)
        assert await migrate(conn) == ["0008_retention.sql"]
        assert await postgres_buckets(dsn) == before
        assert await conn.fetchval("SELECT count(*) FROM interaction_history") == len(events)
        assert await conn.fetchval("SELECT count(*) FROM event_seen") == len(events)
        partitions = await conn.fetch(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'interaction_history'::regclass ORDER BY 1"
        )
        assert [r[0] for r in partitions] == [
            "interaction_history_default",
            "interaction_history_legacy",
        ]
    finally:
        await conn.close()

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        old = [_interaction(e) for e in events[:300]]
        fresh = [replace(e, id="after-0008-" + e.id) for e in old[:100]]
        written = await write_batch(pool, old + fresh, datetime.now(UTC))
        assert (written.new_events, written.duplicates) == (len(fresh), len(old))
        counted = events + [replace(e, id="after-0008-" + e.id) for e in events[:100]]
        assert await postgres_buckets(dsn) == expected_buckets(counted)

        # 35 days kept, 25 days from now (the events span the last 45 days): the legacy
        # partition holds this month too, so it stays and loses its rows before the first of
        # the cutoff's month (as a month would be dropped)
        now = datetime.now(UTC) + timedelta(days=25)
        cut = (now - timedelta(days=35)).date().replace(day=1)
        history_from = datetime(cut.year, cut.month, 1, tzinfo=UTC)
        async with pool.acquire() as conn:
            first = run = await run_retention(conn, now, 35, 0, 0)
            assert run is not None and run.partitions_dropped == []
            kept = sorted((e.tenant, e.id) for e in counted if e.ts >= history_from)
            assert 0 < len(kept) < len(counted)
            assert run.history_rows_deleted == len(counted) - len(kept)
            history = await conn.fetch("SELECT tenant_id, event_id FROM interaction_history")
            fence = await conn.fetch("SELECT tenant_id, event_id FROM event_seen")
            assert sorted(map(tuple, history)) == sorted(map(tuple, fence)) == kept

        later = datetime.now(UTC) + timedelta(days=400)
        async with pool.acquire() as conn:
            run = await run_retention(conn, later, 100, 0, 0)
            assert run is not None
            # the legacy partition and the (empty) months the first run created ahead
            assert first is not None
            created = set(first.partitions_created)
            assert set(run.partitions_dropped) == {"interaction_history_legacy"} | created
            assert run.fence_rows_deleted == len(kept)
            assert await conn.fetchval("SELECT count(*) FROM interaction_history") == 0
        alltime = {k: v for k, v in expected_buckets(counted).items() if k[2] == "alltime"}
        kept = {k: v for k, v in (await postgres_buckets(dsn)).items() if k[2] == "alltime"}
        assert kept == alltime  # all-time buckets outlive the history
    finally:
        await pool.close()


def _interaction(e: Event) -> Interaction:
    return Interaction(e.id, e.tenant, e.ts, e.customer, e.action, e.treatment, e.channel, e.type)
