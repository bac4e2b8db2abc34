"""The commit lanes (streams/pipeline.py): batches commit at once, are acknowledged in the order
they were taken, and a lane that fails stops the run. Pure: the commit is a stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from streams.pipeline import BatchProcessor, GroupCommit, RawMessage
from streams.postgres_sink import WrittenBatch


def raw(offset: int) -> RawMessage:
    return RawMessage(None, b"{}", "t", 0, offset)


class StandIn(BatchProcessor):
    """A processor whose commit waits ``delays[first offset]`` seconds and records itself."""

    def __init__(self, delays: dict[int, float], fail_at: int | None = None) -> None:
        self._mirroring = set()
        self._shards = [0, 1]  # two lanes, whatever COMMIT_LANES says
        self.delays, self.fail_at = delays, fail_at
        self.committing: set[int] = set()
        self.overlapped = False
        self.shards: dict[int, int] = {}

    async def commit(
        self, messages: Sequence[RawMessage], shard: int | None = None
    ) -> WrittenBatch | None:
        first = messages[0].offset
        self.committing.add(first)
        self.overlapped |= len(self.committing) > 1
        self.shards[first] = shard if shard is not None else -1
        await asyncio.sleep(self.delays.get(first, 0.0))
        self.committing.discard(first)
        if first == self.fail_at:
            raise RuntimeError(f"batch at {first} failed")
        return None


async def feed(batches: GroupCommit[int], offsets: range) -> None:
    for offset in offsets:
        await batches.put(offset)


async def run_until(processor: StandIn, offsets: range, acked: list[int]) -> None:
    """Run the lanes over ``offsets`` (batches of at most 2) until all are acknowledged."""
    batches: GroupCommit[int] = GroupCommit(max_items=2)

    async def acknowledge(offset: int) -> None:
        acked.append(offset)

    runner = asyncio.create_task(processor.run(batches, raw, acknowledge))
    try:
        async with asyncio.timeout(5):
            await feed(batches, offsets)
            while len(acked) < len(offsets):
                await asyncio.sleep(0.005)
    finally:
        runner.cancel()


async def test_a_later_batch_that_commits_first_waits_to_be_acknowledged() -> None:
    # Batches of 2: [0, 1] commits slowly, [2, 3] at once; the second must not be acked first.
    processor = StandIn({0: 0.2})
    acked: list[int] = []
    await run_until(processor, range(4), acked)
    assert acked == [0, 1, 2, 3]
    assert processor.overlapped, "the two batches should have committed at the same time"
    assert len(set(processor.shards.values())) == 2, "each lane its own shard"


async def test_a_failing_lane_stops_the_run_and_nothing_after_it_is_acknowledged() -> None:
    processor = StandIn({0: 0.1}, fail_at=0)
    batches: GroupCommit[int] = GroupCommit(max_items=2)
    acked: list[int] = []

    async def acknowledge(offset: int) -> None:
        acked.append(offset)

    feeding = asyncio.create_task(feed(batches, range(6)))
    with pytest.raises(RuntimeError, match="batch at 0 failed"):
        async with asyncio.timeout(5):
            await processor.run(batches, raw, acknowledge)
    feeding.cancel()
    assert acked == []
