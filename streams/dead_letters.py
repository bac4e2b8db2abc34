"""Dead letters to the DLQ topic: the original bytes, with the reason and the source position
as headers.

A batch is acknowledged only once each of its rejected messages is in the DLQ, so sending
retries what heals (broker unreachable, leader moving, no answer within ``send_seconds``:
the client itself would wait 20 minutes for a topic it cannot write) for ``retry_seconds``;
a message too
large for the producer or the broker once the headers are added goes without its value
(``dlq.value.omitted``: its length; the source position says where the original is); anything
else raises ``DeadLetterError`` and the worker stops without acknowledging the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.errors import MessageSizeTooLargeError as TooLarge

from streams.pipeline import DeadLetter

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
# Publish one message to the DLQ topic and wait for the broker's acknowledgement.
Publish = Callable[[bytes | None, bytes | None, Headers], Awaitable[object]]

_MAX_BACKOFF_SECONDS = 5.0


class DeadLetterError(RuntimeError):
    """A rejected message could not be written to the DLQ topic (the batch is incomplete)."""


def headers_of(letter: DeadLetter, omitted: int | None = None) -> Headers:
    source = letter.message
    headers = [
        ("dlq.reason", letter.reason.encode()),
        ("dlq.source.topic", source.topic.encode()),
        ("dlq.source.partition", str(source.partition).encode()),
        ("dlq.source.offset", str(source.offset).encode()),
    ]
    if omitted is not None:
        headers.append(("dlq.value.omitted", str(omitted).encode()))
    return headers


def kafka_cause(exc: BaseException) -> BaseException:
    """The Kafka client's error behind ``exc`` (Faust wraps it in ProducerSendError)."""
    while not isinstance(exc, KafkaError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def heals(exc: BaseException) -> bool:
    """Whether sending again may work (the Kafka client marks such errors retriable)."""
    cause = kafka_cause(exc)
    return isinstance(cause, TimeoutError | KafkaConnectionError | KafkaTimeoutError) or bool(
        getattr(cause, "retriable", False)
    )


async def send_dead_letters(
    publish: Publish,
    topic: str,
    letters: Sequence[DeadLetter],
    retry_seconds: float = 30.0,
    send_seconds: float = 10.0,
) -> None:
    """Return once every letter is in ``topic``; raise ``DeadLetterError`` if one cannot be."""
    without_value: set[int] = set()  # indexes of letters that go without their value
    waiting = list(range(len(letters)))
    deadline = time.monotonic() + retry_seconds
    attempt = 0
    while waiting:
        results = await asyncio.gather(
            *(_send(publish, letters[i], i in without_value, send_seconds) for i in waiting),
            return_exceptions=True,
        )
        again, retrying = [], False
        for i, result in zip(waiting, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            source = letters[i].message
            where = f"partition={source.partition} offset={source.offset}"
            if isinstance(kafka_cause(result), TooLarge) and i not in without_value:
                log.warning(
                    "dead letter too large, sent without its value %s topic=%s", where, topic
                )
                without_value.add(i)
                again.append(i)
            elif heals(result) and time.monotonic() < deadline:
                again.append(i)
                retrying = True
            else:
                raise DeadLetterError(
                    f"cannot write the dead letter of {where} to topic {topic!r}: {result!r}"
                ) from result
        if retrying:
            attempt += 1
            delay = min(_MAX_BACKOFF_SECONDS, 0.1 * 2**attempt)
            log.warning(
                "dead letter send failed attempt=%d retry_in=%.1fs topic=%s", attempt, delay, topic
            )
            await asyncio.sleep(delay)
        waiting = again


async def _send(publish: Publish, letter: DeadLetter, without_value: bool, seconds: float) -> None:
    value = letter.message.value
    async with asyncio.timeout(seconds):
        if without_value and value is not None:
            await publish(letter.message.key, None, headers_of(letter, omitted=len(value)))
        else:
            await publish(letter.message.key, value, headers_of(letter))
