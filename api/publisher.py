"""The API's Kafka producer: idempotent, ``acks=all``, owned by the app's lifespan.

``publish`` returns only once the broker acknowledged every message, or raises
``BrokerUnavailable`` (the route answers 503). A producer that failed is replaced by a new one
(a new producer id), so a broker that lost its state on restart cannot wedge the API.

A 503 means "not acknowledged", not "not written": a broker that was only slow may still hold
some of the messages. The client retries the same request; the event ids make that safe (the
worker counts each id once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer import sender as _sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields

from api import metrics

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 5.0


class BrokerUnavailable(Exception):
    """The broker did not acknowledge every message in time; nothing may be reported accepted."""


class EventPublisher:
    """One producer for the process; reconnects in the background while the broker is away."""

    def __init__(self, bootstrap_servers: str, topic: str, timeout: float) -> None:
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def start(self) -> asyncio.Task[None]:
        """Connect in the background (retrying); returns the task, which start-up may await."""
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._connect())
        return self._connecting

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Send (key, value) pairs and wait until the broker acknowledged all of them."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the broker is not reachable; retry shortly")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):  # no task of its own, unlike wait_for
                await self._send_all(producer, messages)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning(
                "publish failed events=%d topic=%s error=%r", len(messages), self.topic, exc
            )
            self._replace(producer)
            raise BrokerUnavailable(
                f"the broker did not acknowledge the events within {self._timeout:g}s; "
                "retry the same request (event ids make a retry safe)"
            ) from None
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def _send_all(
        self, producer: AIOKafkaProducer, messages: Sequence[tuple[bytes, bytes]]
    ) -> None:
        pending = [await producer.send(self.topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*pending)

    def _replace(self, failed: AIOKafkaProducer) -> None:
        """Drop a producer that failed (once, however many requests saw it fail) and reconnect."""
        if self._producer is not failed:
            return
        self._producer = None
        closing = asyncio.create_task(self._close(failed))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        self.start()

    async def _close(self, producer: AIOKafkaProducer) -> None:
        """Stop a failed producer for good: what it still holds is dropped, never sent later.

        ``stop()`` alone flushes first, and an idempotent producer retries its batches without
        end; cut short by a timeout, it left the sender running with its connections open. A
        producer that outlives a broker restart sends under a producer id the empty broker may
        have handed to its replacement, and a batch that happens to fit that producer's
        sequence is written, after which the replacement's next batch is taken for a duplicate
        and silently dropped (an acknowledged event lost). The client retried the request that
        answered 503; nothing here needs delivering.
        """
        producer._message_accumulator.fail_all(BrokerUnavailable("the producer was replaced"))
        try:
            await asyncio.wait_for(producer.stop(), self._timeout)
        except Exception as exc:  # a broken producer may fail to stop cleanly: it is gone anyway
            log.info("failed producer closed with error=%r", exc)
            await producer.client.close()

    async def _connect(self) -> None:
        delay = 0.2
        while self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                enable_idempotence=True,
                acks="all",
                # Batches expire when a request gives up, so a 503 is rarely delivered later.
                request_timeout_ms=int(self._timeout * 1000),
                max_batch_size=256 * 1024,
                # Room for the largest event a body may carry (the body limit bounds it).
                max_request_size=8 * 1024 * 1024,
            )
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                await producer.stop()
                log.warning("broker not reachable yet, retrying in %.1fs error=%r", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_SECONDS)
                continue
            self._producer = producer
            log.info("producer connected topic=%s", self.topic)


# --- InitProducerId v3 --------------------------------------------------------------------
# aiokafka asks for a producer id with InitProducerId v0 only. Tansu (our embedded broker)
# answers v0 for an idempotent producer with an error; it, like Kafka since 2.5, implements
# v3 (KIP-360: producer id and epoch -1 for a new producer). Offering v3 beside v0 lets
# aiokafka pick the highest version the broker supports, so brokers without v3 still get v0.


class _InitProducerIdResponseV3(Response):  # type: ignore[misc]
    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class _InitProducerIdRequestV3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 3
    RESPONSE_TYPE = _InitProducerIdResponseV3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class _InitProducerIdRequest(Request[InitProducerIdRequest_v0 | _InitProducerIdRequestV3]):  # type: ignore[misc]
    API_KEY = 22

    def __init__(self, transactional_id: str | None, transaction_timeout_ms: int) -> None:
        self._transactional_id = transactional_id
        self._transaction_timeout_ms = transaction_timeout_ms

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class.API_VERSION == 0:
            return request_struct_class(self._transactional_id, self._transaction_timeout_ms)
        return request_struct_class(
            self._transactional_id, self._transaction_timeout_ms, -1, -1, {}
        )


_sender.InitProducerIdRequest = _InitProducerIdRequest  # type: ignore[misc,assignment]


# --- a duplicate the broker cannot vouch for is not an acknowledgement -------------------
# aiokafka reports DuplicateSequenceNumber as success (without an offset): the broker says it
# holds a later batch of this producer id than this one. A broker holds batches of *our*
# producer only if it kept its state; one that restarted empty (Tansu in memory, a Kafka
# whose log is gone) hands producer ids out again from 1, and a producer that outlived the
# restart then shares its id with another: its batches are "duplicates" of the other's and
# are never written. Failing the batch turns that into a 503 and a fresh producer id; where
# the duplicate was real, the retry is counted once all the same (event ids).


class _NeverAnswered(Exception):
    """Matches no broker error: the sender's duplicate branch is never taken."""


_sender.DuplicateSequenceNumber = _NeverAnswered  # type: ignore[misc,assignment]
