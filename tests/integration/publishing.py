"""Publishing for the integration tests: one producer kept open for a whole test, optional
pacing (so a fault can land while events flow), raw messages, and waves of traffic with ids
of their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from core.config import Settings
from tests.integration.traffic import Traffic, make_traffic
from tests.support import encode_event

# --- publishing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A message exactly as published: any key, any value (None is a tombstone)."""

    key: bytes | None
    value: bytes | None


Message = dict[str, Any] | bytes | Raw

# Tansu has no message size limit of its own; aiokafka's default (1 MiB) would refuse a 1 MB
# value plus its key and framing.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class Publisher:
    """A producer kept open for a whole test (``async with Publisher(settings) as pub``)."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.topic = topic or settings.topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_request_size=MAX_REQUEST_BYTES,
        )
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, messages: Sequence[Message], rate: float | None = None) -> list[Any]:
        """Publish in order and wait for every acknowledgement; returns the record metadata.

        ``rate`` (messages per second) spreads them out, so a fault can land while they flow.
        """
        started = time.monotonic()
        pending = []
        for i, message in enumerate(messages):
            if rate and i % 50 == 0:
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing the load, not synchronizing
            if isinstance(message, Raw):
                key, value = message.key, message.value
            else:
                key, value = encode_event(message)
            pending.append(await self._producer.send(self.topic, value=value, key=key))
            self.sent += 1
        return list(await asyncio.gather(*pending))


def wave(
    count: int,
    seed: int,
    prefix: str,
    republish: Sequence[dict[str, Any]] = (),
    invalid_count: int = 0,
) -> Traffic:
    """``make_traffic`` with ids of its own (``prefix``), so waves never collide by accident,
    plus ``republish``: events of earlier waves published again (duplicates across a fault)."""
    base = make_traffic(count, seed=seed, invalid_count=invalid_count)
    renamed: dict[int, dict[str, Any]] = {}

    def rename(event: dict[str, Any]) -> dict[str, Any]:
        # a duplicate is the same dict object in make_traffic: it keeps the same new id
        return renamed.setdefault(id(event), {**event, "id": f"{prefix}{event['id']}"})

    out = Traffic()
    for message in base.messages:
        out.messages.append(rename(message) if isinstance(message, dict) else message)
    out.valid = [rename(e) for e in base.valid]
    out.invalid = list(base.invalid)
    step = max(1, len(out.messages) // (len(republish) + 1))
    for i, again in enumerate(republish):
        out.messages.insert((i + 1) * step + i, again)
        out.valid.append(again)
    return out
