"""Noticing a partition whose log went backwards (pure).

A broker that lost its log (the embedded Tansu keeps it in memory) or a topic deleted and
created again (on any Kafka) leaves the group's committed position above the new log's end.
The consumer then resets to the start by itself, but Faust drops every message below the
offset it last read, and ignores acknowledgements below the committed one: the new log's
first messages would never be counted. Reading such a partition again from the start is
safe: counting is by event id.

The log end is the high watermark of the consumer's last fetch (Tansu answers ListOffsets
with a wrong end, e.g. 1 for a partition of 300 messages; fetch responses carry the right one).
"""

from __future__ import annotations


def went_backwards(log_end: int | None, committed: int | None, last_read: int | None) -> bool:
    """Whether the log ends below where this consumer already is: below the committed
    offset (the next one to read), or at or below the last offset it read."""
    if log_end is None or log_end < 0:
        return False  # nothing fetched yet: no end known
    reached = max(committed or 0, last_read + 1 if last_read is not None else 0)
    return log_end < reached
