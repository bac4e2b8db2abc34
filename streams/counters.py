"""Pure counting helpers of the write path (the aggregation itself runs in Postgres: see
streams/postgres_sink.py)."""

from __future__ import annotations

from collections.abc import Iterable

from streams.events import Interaction


def unique_by_id(events: Iterable[Interaction]) -> list[Interaction]:
    """First occurrence of each (tenant, event id); later copies are duplicates."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for event in events:
        key = (event.tenant_id, event.id)
        if key not in seen:
            seen.add(key)
            unique.append(event)
    return unique
