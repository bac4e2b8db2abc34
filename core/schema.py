"""What is counted, declared once: outcome types, counters and dimensions.

The write statement's column lists (streams/postgres_sink.py, streams/rebuild.py), the Redis
strides (streams/redis_sink.py, api/redis_read.py), the Postgres reads (api/queries.py), the
API rows and their OpenAPI models (api/summary.py, api/models.py), the dashboard (served the
registry by the API) and the recount (tests/recount.py) all derive from this module; a test
(tests/unit/core/test_schema.py with the migrations) checks the migrations agree with it.

Adding a system outcome type: a line in ``SYSTEM_OUTCOMES`` and a migration that adds its
column to ``interaction_bucket`` (and moves its past counts there from
``interaction_bucket_outcome``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Classification(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"


class Category(StrEnum):
    IMPRESSION = "impression"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class SystemOutcome:
    """An outcome type every tenant has; it cannot be changed or deleted."""

    key: str
    name: str
    description: str
    classification: Classification
    category: Category


# The seed documents' numbers come out of these classifications: positive = click + accept,
# negative = dismiss; convert is a funnel stage (in `convert` and `cvr`), not a positive.
SYSTEM_OUTCOMES: tuple[SystemOutcome, ...] = (
    SystemOutcome(
        "impression", "Impression", "the action was shown", Classification.NEUTRAL,
        Category.IMPRESSION,
    ),
    SystemOutcome(
        "click", "Click", "the customer clicked", Classification.POSITIVE, Category.RESPONSE
    ),
    SystemOutcome(
        "dismiss", "Dismiss", "the customer dismissed the action", Classification.NEGATIVE,
        Category.RESPONSE,
    ),
    SystemOutcome(
        "accept", "Accept", "the customer accepted the action", Classification.POSITIVE,
        Category.RESPONSE,
    ),
    SystemOutcome(
        "convert", "Convert", "the customer converted (funnel stage, counted in cvr)",
        Classification.NEUTRAL, Category.RESPONSE,
    ),
)  # fmt: skip

# System types are counted in their own bucket columns (the write path's hot loop); every
# other accepted type is counted per (bucket, group, type) in interaction_bucket_outcome.
SYSTEM_TYPES: tuple[str, ...] = tuple(o.key for o in SYSTEM_OUTCOMES)
SYSTEM_CLASSES: Mapping[str, Classification] = {o.key: o.classification for o in SYSTEM_OUTCOMES}

# An event's ``type`` and an outcome type's ``key``: the same rule.
TYPE_KEY_PATTERN = r"[a-z][a-z0-9_]{0,31}"
TYPE_KEY = re.compile(TYPE_KEY_PATTERN)

# Counters kept per bucket and group, in the order the write path ships them (the outbox's
# counts rows, the Redis script's strides). ``distinct`` is uniqueActions for customers and
# treatmentCount for channels.
COUNTERS: tuple[str, ...] = (*SYSTEM_TYPES, "total", "distinct")
# The interaction_bucket column of each counter.
COUNTER_COLUMNS: dict[str, str] = {c: "distinct_count" if c == "distinct" else c for c in COUNTERS}
# Counters the API shows on every row (``distinct`` is shown under a per-dimension name).
ROW_COUNTERS: tuple[str, ...] = (*SYSTEM_TYPES, "total")

# Dimension -> the history column holding its group id.
DIMENSION_COLUMNS: dict[str, str] = {
    "action": "action_id",
    "treatment": "treatment_id",
    "channel": "channel_id",
    "customer": "customer_id",
}

# Outcome type statuses (a soft-deleted type has a deleted_at besides).
STATUSES: tuple[str, ...] = ("active", "inactive")


def sentiment(
    counts: Mapping[str, int], classes: Mapping[str, Classification]
) -> tuple[int, int, int]:
    """(positive, negative, neutral) of one group: the counts of the types ``classes`` calls
    positive or negative; neutral = max(impression - positive - negative, 0) (contract
    section 6). A type ``classes`` does not know (unregistered, deleted) is neutral."""
    positive = negative = 0
    for key, n in counts.items():
        cls = classes.get(key)
        if cls is Classification.POSITIVE:
            positive += n
        elif cls is Classification.NEGATIVE:
            negative += n
    return positive, negative, max(counts.get("impression", 0) - positive - negative, 0)
