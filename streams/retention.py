"""Retention runs (core/retention.py decides what): monthly history partitions created ahead,
old ones dropped, expired fence rows, daily buckets and distinct tags deleted.

One run at a time across workers (a session advisory lock; a second worker skips its turn).
The horizons move first, in a short transaction under the counting lock taken exclusive: no
batch counts while they move, and every later batch refuses events older than them
(streams/postgres_sink.py). The deletes follow, idempotent, in slices: a run cut short is
finished by the next one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from core.db import Connection
from core.distinct import TAG_CODES
from core.retention import (
    Horizons,
    Partition,
    advance,
    cutoff_day,
    kept_tags_from,
    months_to_create,
    next_month,
    partitions_to_drop,
)
from streams.postgres_sink import COUNTING_LOCK_ID

log = logging.getLogger(__name__)

RETENTION_LOCK_ID = 0x1A7E_DE1E
HISTORY = "interaction_history"
DEFAULT_PARTITION = "interaction_history_default"
# Rows per delete statement: short transactions, no long lock on a hot table.
SLICE_ROWS = 20_000

_PARTITIONS = """
SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'interaction_history'::regclass
"""
_BOUND = re.compile(r"^FOR VALUES FROM \((.+)\) TO \((.+)\)$")
_HORIZONS = "SELECT history_from, buckets_from, distinct_from FROM retention_horizon"
_SET_HORIZONS = """
UPDATE retention_horizon
SET history_from = $1, buckets_from = $2, distinct_from = $3, events_from = $4, changed_at = now()
"""
# Rows before the horizon in a partition that is not a month (the legacy one, which holds
# everything before migration 0008, and the default one): deleted, as a month is dropped.
_DELETE_BEFORE = "DELETE FROM {partition} WHERE ts < $1"
_DELETE_FENCE = """
DELETE FROM event_seen WHERE ctid = ANY(ARRAY(SELECT ctid FROM event_seen WHERE ts < $1 LIMIT $2))
"""
_DELETE_BUCKETS = {
    table: f"""
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE period = 'daily' AND bucket_start < $1 LIMIT $2))
"""
    for table in ("interaction_bucket", "interaction_bucket_outcome")
}
_EXPIRED_TAG = " OR ".join(
    f"(t % 4 = {code} AND t < ${i + 1})" for i, code in enumerate(TAG_CODES.values())
)
_PRUNE_TAGS = f"""
UPDATE distinct_seen SET tags = ARRAY(SELECT t FROM unnest(tags) AS t WHERE NOT ({_EXPIRED_TAG}))
WHERE EXISTS (SELECT 1 FROM unnest(tags) AS t WHERE {_EXPIRED_TAG})
"""


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """What one run did."""

    horizons: Horizons
    partitions_created: list[str]
    partitions_dropped: list[str]
    history_rows_deleted: int  # from the partitions that are not months (legacy, default)
    fence_rows_deleted: int
    buckets_deleted: int
    pairs_pruned: int


def partition_name(month: date) -> str:
    return f"{HISTORY}_p{month:%Y%m}"


def _bound(text: str) -> datetime | None:
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return datetime.fromisoformat(text.strip("'")).astimezone(UTC)


async def history_partitions(conn: Connection) -> list[Partition]:
    """The history's partitions with their ranges (read in UTC)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        rows = await conn.fetch(_PARTITIONS)
    found = []
    for row in rows:
        match = _BOUND.match(row["bound"])
        if match is None:  # DEFAULT
            found.append(Partition(row["name"], None, None))
        else:
            found.append(Partition(row["name"], _bound(match[1]), _bound(match[2])))
    return sorted(
        found, key=lambda p: (p.until is None, p.until or datetime.min.replace(tzinfo=UTC))
    )


async def create_month(conn: Connection, month: date) -> str:
    """The partition of ``month``; rows the default partition holds for it move into it."""
    name = partition_name(month)
    since, until = month.isoformat(), next_month(month).isoformat()
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE {HISTORY} IN SHARE ROW EXCLUSIVE MODE")
        await conn.execute(
            f"CREATE TEMP TABLE moving ON COMMIT DROP AS WITH d AS ("
            f" DELETE FROM {DEFAULT_PARTITION}"
            f" WHERE ts >= '{since} 00:00+00' AND ts < '{until} 00:00+00' RETURNING *)"
            " SELECT * FROM d"
        )
        await conn.execute(
            f"CREATE TABLE {name} PARTITION OF {HISTORY}"
            f" FOR VALUES FROM ('{since} 00:00+00') TO ('{until} 00:00+00')"
        )
        await conn.execute(f"INSERT INTO {HISTORY} SELECT * FROM moving")
    return name


async def ensure_partitions(
    conn: Connection, now: datetime, cutoff: date | None = None
) -> list[str]:
    """Create the monthly partitions up to two months after ``now``'s month (none wholly
    before the history retention's ``cutoff``)."""
    return [
        await create_month(conn, month)
        for month in months_to_create(await history_partitions(conn), now, cutoff=cutoff)
    ]


async def read_horizons(conn: Connection) -> Horizons:
    row = await conn.fetchrow(_HORIZONS)
    assert row is not None  # migration 0008 inserts the only row
    return Horizons(row["history_from"], row["buckets_from"], row["distinct_from"])


async def _delete_in_slices(conn: Connection, sql: str, *args: object) -> int:
    deleted = 0
    while True:
        status = await conn.execute(sql, *args, SLICE_ROWS)
        n = int(status.split()[-1])
        deleted += n
        if n < SLICE_ROWS:
            return deleted


async def run_retention(
    conn: Connection, now: datetime, history_days: int, bucket_days: int, distinct_days: int
) -> RetentionRun | None:
    """One retention run at ``now`` (days 0: keep that store whole); None when another
    process holds the retention lock (it is doing the same)."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_ID):
        return None
    try:
        created = await ensure_partitions(conn, now, cutoff_day(now, history_days))
        partitions = await history_partitions(conn)
        current = await read_horizons(conn)
        horizons = advance(current, now, history_days, bucket_days, distinct_days)
        if horizons != current:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", COUNTING_LOCK_ID)
                await conn.execute(
                    _SET_HORIZONS,
                    horizons.history_from,
                    horizons.buckets_from,
                    horizons.distinct_from,
                    horizons.events_from,
                )
            log.info(
                "retention horizons moved history_from=%s buckets_from=%s distinct_from=%s",
                horizons.history_from,
                horizons.buckets_from,
                horizons.distinct_from,
            )
        dropped: list[str] = []
        fence = history = 0
        if horizons.history_from is not None:
            for p in partitions_to_drop(partitions, horizons.history_from.date()):
                await conn.execute(f"DROP TABLE {p.name}")
                dropped.append(p.name)
            for p in partitions:
                if p.since is None and (p.until is None or p.until > horizons.history_from):
                    sql = _DELETE_BEFORE.format(partition=p.name)
                    status = await conn.execute(sql, horizons.history_from)
                    history += int(status.split()[-1])
            fence = await _delete_in_slices(conn, _DELETE_FENCE, horizons.history_from)
        buckets = 0
        if horizons.buckets_from is not None:
            for sql in _DELETE_BUCKETS.values():
                buckets += await _delete_in_slices(conn, sql, horizons.buckets_from)
        pruned = 0
        if horizons.distinct_from is not None:
            # A pair's row stays, tags or none: it is the all-time bucket, and the all-time
            # distinct counts stay exact only if a pair seen before is never new again.
            kept = kept_tags_from(horizons.distinct_from)
            status = await conn.execute(_PRUNE_TAGS, *(kept[c] for c in TAG_CODES.values()))
            pruned = int(status.split()[-1])
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_ID)
    run = RetentionRun(horizons, created, dropped, history, fence, buckets, pruned)
    if created or dropped or history or fence or buckets or pruned:
        log.info(
            "retention run partitions_created=%s partitions_dropped=%s history_rows_deleted=%d"
            " fence_rows_deleted=%d"
            " buckets_deleted=%d pairs_pruned=%d",
            ",".join(created) or "-",
            ",".join(dropped) or "-",
            history,
            fence,
            buckets,
            pruned,
        )
    return run
