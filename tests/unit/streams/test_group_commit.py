"""GroupCommit: batches take what arrived, fill up under a backlog, and hold back the reader
when full; no item is lost or taken twice."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.pipeline import GroupCommit


async def test_a_lone_item_is_taken_at_once() -> None:
    batches: GroupCommit[int] = GroupCommit(100)
    await batches.put(1)
    assert await asyncio.wait_for(batches.take(), 0.5) == [1]


async def test_take_waits_only_while_nothing_arrived() -> None:
    batches: GroupCommit[int] = GroupCommit(100)
    taking = asyncio.ensure_future(batches.take())
    await asyncio.sleep(0.01)
    assert not taking.done()
    await batches.put(7)
    assert await asyncio.wait_for(taking, 0.5) == [7]


async def test_under_a_backlog_take_waits_for_a_full_batch() -> None:
    batches: GroupCommit[int] = GroupCommit(3, fill_seconds=5)
    batches.fill = True
    await batches.put(1)
    taking = asyncio.ensure_future(batches.take())
    await asyncio.sleep(0.01)
    assert not taking.done()  # one of three: still filling
    await batches.put(2)
    await batches.put(3)
    assert await asyncio.wait_for(taking, 0.5) == [1, 2, 3]


async def test_a_backlog_batch_that_does_not_fill_is_taken_after_the_fill_time() -> None:
    batches: GroupCommit[int] = GroupCommit(3, fill_seconds=0.05)
    batches.fill = True
    await batches.put(1)
    assert await asyncio.wait_for(batches.take(), 1) == [1]


async def test_a_full_buffer_holds_the_reader_back_until_taken() -> None:
    batches: GroupCommit[int] = GroupCommit(2)
    await batches.put(1)
    await batches.put(2)
    third = asyncio.ensure_future(batches.put(3))
    await asyncio.sleep(0.01)
    assert not third.done()
    assert await batches.take() == [1, 2]
    await asyncio.wait_for(third, 0.5)
    assert await batches.take() == [3]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(), max_size=60), st.integers(1, 7), st.booleans())
def test_every_item_is_taken_once_in_order(items: list[int], size: int, fill: bool) -> None:
    async def run() -> list[int]:
        batches: GroupCommit[int] = GroupCommit(size, fill_seconds=0.001)
        batches.fill = fill
        taken: list[int] = []

        async def reader() -> None:
            for item in items:
                await batches.put(item)

        async def committer() -> None:
            while len(taken) < len(items):
                batch = await batches.take()
                assert 1 <= len(batch) <= size
                taken.extend(batch)

        await asyncio.wait_for(asyncio.gather(reader(), committer()), 5)
        return taken

    assert asyncio.run(run()) == items


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=60), st.integers(1, 500))
def test_batches_and_the_buffer_stay_within_the_byte_bound(sizes: list[int], bound: int) -> None:
    """Items are their own size in bytes: no batch above the bound unless it is one item, and
    the buffer never holds more than the bound plus one item."""

    async def run() -> list[int]:
        batches: GroupCommit[int] = GroupCommit(1000, max_bytes=bound, size=lambda n: n)
        taken: list[int] = []
        largest = max(sizes, default=0)

        async def reader() -> None:
            for item in sizes:
                await batches.put(item)
                assert batches.buffered_bytes < bound + largest + 1

        async def committer() -> None:
            while len(taken) < len(sizes):
                batch = await batches.take()
                assert len(batch) == 1 or sum(batch) <= bound
                taken.extend(batch)

        await asyncio.wait_for(asyncio.gather(reader(), committer()), 5)
        return taken

    assert asyncio.run(run()) == sizes
