"""streams/flow.py: the bytes Faust holds stay bounded; fetching resumes at half."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.flow import ByteGate


def test_fetching_pauses_past_the_bound_and_resumes_at_half() -> None:
    gate = ByteGate(1000)
    assert not gate.fetched(600)
    assert not gate.fetched(400)  # exactly at the bound: still fine
    assert gate.fetched(1)  # over it: pause
    assert gate.fetched(10)  # still over: pause again (Faust may have resumed a partition)
    assert not gate.taken(500)  # 511 held, above half
    assert gate.taken(11)  # 500: half, resume once
    assert not gate.taken(100)
    assert gate.bytes == 400


def test_a_rebalance_clears_what_is_held() -> None:
    gate = ByteGate(100)
    gate.fetched(150)
    assert gate.cleared()  # was paused: resume
    assert gate.bytes == 0 and not gate.cleared()
    assert not gate.taken(150)  # a message the agent held through the rebalance
    assert gate.bytes == 0


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2_000)), max_size=300))
def test_held_bytes_are_what_was_fetched_minus_taken_and_pauses_follow_them(
    steps: list[tuple[bool, int]],
) -> None:
    """A naive model: the messages in flight, in order; the gate agrees with their sum, and
    says pause exactly when a fetch leaves more than the bound held."""
    bound = 3_000
    gate = ByteGate(bound)
    held: list[int] = []
    paused = False
    for fetch, size in steps:
        if fetch:
            held.append(size)
            assert gate.fetched(size) == (sum(held) > bound)
            paused = paused or sum(held) > bound
        elif held:
            taken = held.pop(0)
            resume = gate.taken(taken)
            assert resume == (paused and sum(held) <= bound // 2)
            if resume:
                paused = False
        assert gate.bytes == sum(held)
        assert gate.paused == paused
