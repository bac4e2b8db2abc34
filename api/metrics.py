"""Prometheus metrics of the API, as plain ASGI middleware (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("api_requests_total", "HTTP requests", ["path", "status"])
LATENCY = Histogram(
    "api_request_seconds",
    "HTTP request latency",
    ["path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# HTTP ingestion: events received, by outcome (accepted: acknowledged by the broker;
# rejected: broke the event contract; unavailable: answered 503, the client retries).
INGEST_EVENTS = Counter("api_ingest_events_total", "events received over HTTP", ["outcome"])
PUBLISH_SECONDS = Histogram(
    "api_ingest_publish_seconds",
    "from the first send to the broker's last acknowledgement, per request",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def route_label(scope: Scope) -> str:
    """The route template the router matched (``/api/v1/outcome-types/{type_key}``): one
    label per route, whatever ids a path holds; unmatched paths share ``other``, so scanners
    cannot blow up the metrics' cardinality. Derived from the app's routes, never a list."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "other"


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = route_label(scope)  # known once routing ran
            LATENCY.labels(path).observe(time.perf_counter() - started)
            REQUESTS.labels(path, str(status["code"])).inc()
