"""Limits applied before a request costs anything: body size and request rates.

Both are plain ASGI middleware in front of routing, so they cover every route, today's and
those added later, with no code in the route:

- ``BodyLimit``: a body above the limit is refused with 413 before anything reads it (by its
  ``Content-Length``), or as soon as the bytes read pass the limit (chunked uploads). Nothing
  is parsed or authenticated first, so memory stays bounded whatever the client sends.
  A route that needs another limit gets an entry in ``per_path``.
- ``AddressRateLimit``: requests per client address under ``/api/``, checked before the key.
- ``RateLimits.check_key``: requests per API key, checked once the key is known (api.deps);
  a producer key has a budget of its own (it posts events, often many a second).

The counting is the ``limits`` library's sliding-window counter, in this process's memory:
with several API processes, each allows the configured rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


def parse_limits(text: str, setting: str) -> list[RateLimitItem]:
    """``"100/second;3000/minute"`` -> limit items; empty text means no limit."""
    if not text.strip():
        return []
    try:
        return list(parse_many(text))
    except ValueError:
        raise ValueError(
            f"{setting}: {text!r} is not a rate limit; write e.g. '100/second;3000/minute'"
        ) from None


class SweptInline(MemoryStorage):
    """The ``limits`` library's memory storage, its expired keys swept inline at most once a
    second instead of by a ``threading.Timer`` it starts again 10 ms after the last: a new
    thread every 10 ms under steady traffic, about 110 µs of CPU per request at 200
    requests/s. Reads check expiry themselves (``get``), so the sweep only bounds memory."""

    SWEEP_SECONDS = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = 0.0

    # The parent calls its private ``__schedule_expiry`` on every count; this takes its place.
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class RateLimits:
    """Request budgets per API key and per client address."""

    def __init__(self, per_key: str, per_address: str, per_producer_key: str = "") -> None:
        self._limiter = SlidingWindowCounterRateLimiter(SweptInline())
        self.per_key = parse_limits(per_key, "INTERACTION_SUMMARY_API_RATE_LIMIT_PER_KEY")
        self.per_producer_key = parse_limits(
            per_producer_key, "INTERACTION_SUMMARY_API_RATE_LIMIT_PER_PRODUCER_KEY"
        )
        self.per_address = parse_limits(
            per_address, "INTERACTION_SUMMARY_API_RATE_LIMIT_PER_ADDRESS"
        )

    def _retry_after(self, items: list[RateLimitItem], *identity: str) -> int | None:
        """None if the request fits every budget (and is counted), else seconds to wait."""
        for item in items:
            if not self._limiter.hit(item, *identity):
                reset = self._limiter.get_window_stats(item, *identity).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def check_key(self, key_prefix: str, producer: bool = False) -> int | None:
        budget = self.per_producer_key if producer else self.per_key
        return self._retry_after(budget, "key", key_prefix)

    def check_address(self, address: str) -> int | None:
        return self._retry_after(self.per_address, "address", address)


def too_many(retry_after: int, what: str) -> tuple[int, str, str, dict[str, str]]:
    """Status, code, message and headers of a 429."""
    return (
        429,
        "RATE_LIMITED",
        f"too many requests for this {what}; retry after {retry_after} s",
        {"Retry-After": str(retry_after)},
    )


class AddressRateLimit:
    """429 for a client address past its budget, on paths under ``prefix``, before the key."""

    def __init__(self, app: ASGIApp, limits: RateLimits, prefix: str = "/api/") -> None:
        self.app = app
        self.limits = limits
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            client = scope.get("client")
            wait = self.limits.check_address(client[0] if client else "unknown")
            if wait is not None:
                status, code, message, headers = too_many(wait, "client address")
                await error_response(status, code, message, headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a request body above ``max_bytes`` (or ``per_path[path]``), unread and unparsed."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(limit)(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI lets an HTTPException out of body reading; the app's handler
                    # renders it as the usual JSON error (api.errors).
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, bounded_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than {limit:,} bytes (INTERACTION_SUMMARY_API_MAX_BODY_BYTES)"
    )


def _refuse(limit: int) -> ASGIApp:
    response = error_response(413, "PAYLOAD_TOO_LARGE", _too_large(limit))
    # The unread body stays on the connection: close it rather than read gigabytes.
    response.headers["connection"] = "close"
    return response
