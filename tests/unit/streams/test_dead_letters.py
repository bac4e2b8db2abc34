"""send_dead_letters: every letter delivered, or an error; never a silent drop."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from faust.exceptions import ProducerSendError

from streams.dead_letters import DeadLetterError, Headers, send_dead_letters
from streams.pipeline import DeadLetter, RawMessage


def letter(offset: int, value: bytes | None = b"not json") -> DeadLetter:
    return DeadLetter(RawMessage(b"k", value, "interactions", 2, offset), "not JSON: oops")


class Broker:
    """Publishes what it is given, failing as told first (per offset header)."""

    def __init__(self, failures: dict[int, list[Exception]]) -> None:
        self.failures = failures
        self.delivered: list[tuple[bytes | None, dict[str, bytes]]] = []

    async def publish(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        named = dict(headers)
        pending = self.failures.get(int(named["dlq.source.offset"]), [])
        if pending:
            raise pending.pop(0)
        self.delivered.append((value, named))


async def test_every_letter_is_delivered_with_its_reason_and_source() -> None:
    broker = Broker({})
    await send_dead_letters(broker.publish, "dlq", [letter(5), letter(6, None)])
    assert [(v, h["dlq.source.offset"]) for v, h in broker.delivered] == [
        (b"not json", b"5"),
        (None, b"6"),
    ]
    assert all(h["dlq.reason"] == b"not JSON: oops" for _, h in broker.delivered)


async def test_a_letter_too_large_goes_without_its_value_and_says_how_long_it_was() -> None:
    too_large = ProducerSendError("Error while sending")
    too_large.__cause__ = MessageSizeTooLargeError()
    broker = Broker({7: [too_large]})
    await send_dead_letters(broker.publish, "dlq", [letter(6), letter(7, b"x" * 1000)])
    by_offset = {h["dlq.source.offset"]: (v, h) for v, h in broker.delivered}
    assert by_offset[b"7"][0] is None
    assert by_offset[b"7"][1]["dlq.value.omitted"] == b"1000"
    assert by_offset[b"6"][0] == b"not json"


async def test_an_unreachable_broker_is_retried_until_it_answers() -> None:
    broker = Broker({3: [KafkaConnectionError(), KafkaConnectionError()]})
    await send_dead_letters(broker.publish, "dlq", [letter(3)])
    assert len(broker.delivered) == 1


@pytest.mark.parametrize(
    "error",
    [
        TopicAuthorizationFailedError(),  # never heals by retrying
        ValueError("a bug"),  # not a Kafka error at all
    ],
)
async def test_an_error_that_does_not_heal_raises_with_the_topic_and_position(
    error: Exception,
) -> None:
    broker = Broker({9: [error]})
    with pytest.raises(DeadLetterError, match=r"partition=2 offset=9 to topic 'dlq'"):
        await send_dead_letters(broker.publish, "dlq", [letter(8), letter(9)])


async def test_a_healing_error_that_lasts_too_long_raises() -> None:
    broker = Broker({1: [KafkaConnectionError()] * 100})
    with pytest.raises(DeadLetterError, match="KafkaConnectionError"):
        await send_dead_letters(broker.publish, "dlq", [letter(1)], retry_seconds=0.5)


async def test_a_broker_that_never_answers_is_given_up_on() -> None:
    async def never(key: bytes | None, value: bytes | None, headers: Headers) -> None:
        await asyncio.Event().wait()

    with pytest.raises(DeadLetterError, match="TimeoutError"):
        await send_dead_letters(never, "dlq", [letter(1)], retry_seconds=0.3, send_seconds=0.1)
