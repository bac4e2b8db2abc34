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
_KNOWN_PATHS = {
    "/api/v1/interaction-summary",
    "/api/v1/interaction-timeseries",
    "/api/v1/interactions",
    "/api/v1/respond",
    "/api/v1/respond/bulk",
    "/health",
    "/ready",
}


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label so scanners cannot blow up the metric's cardinality.
        path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            LATENCY.labels(path).observe(time.perf_counter() - started)
            REQUESTS.labels(path, str(status["code"])).inc()
