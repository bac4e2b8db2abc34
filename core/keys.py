"""Every Redis key this service writes, in one place, with why it exists.

Layout per bucket (tenant, dimension, period, bucket start):
- ``{p}:rank:...`` sorted set, member = group id, score = ``-total``. Ascending ZRANGE then
  gives total descending with ties by id ascending: exactly the API's sort order. The score
  is the group's total: no hash field repeats it (one Redis write less per group and batch).
- ``{p}:cnt:...`` hash, field ``{counter}:{group id}`` -> count for the other counters
  (HASH_COUNTERS; a zero count has no field), and ``~{type}:{group id}`` -> count of each
  type without a counter of its own (custom outcome types; ``~`` is in no counter or type
  name, so a custom type called ``distinct`` cannot collide). One hash per bucket keeps a
  page read to a single HMGET.
- ``{p}:types:...`` set of the custom types counted in the bucket: the page read asks the
  hash for exactly those.
"""

from __future__ import annotations

from datetime import date

from core.schema import COUNTERS

# Counters kept in a bucket's hash; ``total`` lives in the rank's score.
HASH_COUNTERS: tuple[str, ...] = tuple(c for c in COUNTERS if c != "total")

# How long an "outbox batch N was applied" marker lives. A batch stays in the Postgres
# outbox at most seconds after its commit, so a day is a wide margin against re-applying.
APPLIED_MARKER_TTL_SECONDS = 86_400


def ready_key(prefix: str) -> str:
    """The epoch (core/mirror.py) of the resync whose copy completed; absent after a flush or
    restart and while a resync copies. Reads and applies trust Redis only while it holds the
    epoch Postgres names."""
    return f"{prefix}:ready"


def applied_count_key(prefix: str) -> str:
    """How many outbox batches Redis applied (or a resync marked) in its epoch: compared
    with the count Postgres confirmed (core/mirror.py), it shows a Redis that lost batches."""
    return f"{prefix}:applied_batches"


def resync_key(prefix: str) -> str:
    """Hash of the resync copying now: ``epoch`` and ``rows`` written so far. Each chunk adds
    its rows in the transaction that writes them; the copy is marked ready only if both
    still say what the resync wrote (a Redis restarted between two chunks says otherwise)."""
    return f"{prefix}:resync"


def presence_key(prefix: str, tenant: str, period: str, start: date) -> str:
    """Where a bucket's ``present_field`` flags live: its action counts hash."""
    return counts_key(prefix, tenant, "action", period, start)


def present_field(dimension: str) -> str:
    """Field of a bucket's *action* counts hash saying that ``dimension`` has data in that
    bucket (every event has an action). A read whose keys are gone though this field says
    they exist (evicted) goes to Postgres instead of answering an empty or partial page."""
    return f"present:{dimension}"


def applied_key(prefix: str, outbox_id: int) -> str:
    """Marker that outbox batch ``outbox_id`` is already in Redis: the exactly-once fence."""
    return f"{prefix}:applied:{outbox_id}"


def _bucket_suffix(tenant: str, dimension: str, period: str, start: date) -> str:
    return f"{{{tenant}}}:{dimension}:{period}:{start.isoformat()}"


def rank_key(prefix: str, tenant: str, dimension: str, period: str, start: date) -> str:
    return f"{prefix}:rank:{_bucket_suffix(tenant, dimension, period, start)}"


def counts_key(prefix: str, tenant: str, dimension: str, period: str, start: date) -> str:
    return f"{prefix}:cnt:{_bucket_suffix(tenant, dimension, period, start)}"


def types_key(prefix: str, tenant: str, dimension: str, period: str, start: date) -> str:
    return f"{prefix}:types:{_bucket_suffix(tenant, dimension, period, start)}"


def counter_field(counter: str, group_id: str) -> str:
    return f"{counter}:{group_id}"


# Prefix of a custom type's field in a bucket's hash (the Lua scripts spell it too).
OUTCOME_FIELD_PREFIX = "~"


def outcome_field(type_key: str, group_id: str) -> str:
    return f"{OUTCOME_FIELD_PREFIX}{type_key}:{group_id}"


def data_key_patterns(prefix: str) -> tuple[str, ...]:
    """SCAN patterns matching every bucket key and marker (deleted when Redis is rebuilt)."""
    return (
        f"{prefix}:rank:*",
        f"{prefix}:cnt:*",
        f"{prefix}:types:*",
        f"{prefix}:applied:*",
    )
