"""Which Redis state Postgres vouches for: the epoch of the last resync and how many of its
batches Redis is known to hold (table ``redis_mirror``, core/migrations/0007_redis_epoch.sql).

Redis is trusted, by the worker's applies and by every API read, only when its ``ready`` key
holds this epoch and its applied-batch count is at least ``confirmed``: a Redis that came back
from an old RDB/AOF or a lagging replica holds an older epoch or fewer batches, and is read
from Postgres and resynced instead.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import asyncpg

from core.db import Connection

SELECT_MIRROR = "SELECT epoch, confirmed FROM redis_mirror"
# A new epoch, '<resyncs>:<random id>': from now on Postgres vouches for no Redis until a
# resync completes under it.
_NEW_EPOCH = """
UPDATE redis_mirror
SET epoch = (resyncs + 1)::text || ':' || $1, confirmed = 0, resyncs = resyncs + 1,
    changed_at = now()
RETURNING epoch
"""


@dataclass(frozen=True, slots=True)
class MirrorState:
    """``epoch``: what Redis's ``ready`` must hold; ``confirmed``: the fewest applied batches
    of that epoch a current Redis can have counted."""

    epoch: str
    confirmed: int


async def mirror_state(conn: Connection | asyncpg.Pool) -> MirrorState:
    row = await conn.fetchrow(SELECT_MIRROR)
    assert row is not None, "redis_mirror holds one row (migration 0007)"
    return MirrorState(row["epoch"], row["confirmed"])


async def new_epoch(conn: Connection) -> str:
    """Start a new epoch (a resync, or an outbox dropped past its bound); returns it."""
    return str(await conn.fetchval(_NEW_EPOCH, secrets.token_hex(8)))


class MirrorCache:
    """The Postgres side of the proof for the read path, re-read at most every ``seconds``.

    When Postgres cannot be read, the last state read stays in use: nothing commits while
    Postgres is away, so a Redis that held it then is still exact (the API keeps answering
    current periods from Redis during a Postgres outage). Never read at all: None.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._state: MirrorState | None = None
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(
        self, pool: asyncpg.Pool | None, errors: tuple[type[BaseException], ...]
    ) -> MirrorState | None:
        if pool is None or time.monotonic() - self._read_at < self._seconds:
            return self._state
        async with self._lock:
            if time.monotonic() - self._read_at >= self._seconds:
                try:
                    self._state = await mirror_state(pool)
                except errors:
                    pass  # keep the last state (see the class docstring)
                # also after a failure: a Postgres that is away is asked again only after
                # `seconds`, not on every request
                self._read_at = time.monotonic()
        return self._state


def epoch_number(epoch: str) -> int:
    """The counter part of an epoch ('<resyncs>:<random id>'); 0 before the first resync."""
    head = epoch.partition(":")[0]
    return int(head) if head.isdigit() else 0
