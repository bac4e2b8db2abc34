"""Prometheus metrics of the API; api.access.RequestLog records the requests' (one middleware for
the request id, the access log and these: a layer less per request)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import Scope

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


# Each label set's child, looked up once: ``labels()`` takes a lock and builds a key per call.
_CHILDREN: dict[tuple[str, int], tuple[Any, Any]] = {}


def record(scope: Scope, status: int, seconds: float) -> None:
    """Count one answered request under its route (``route_label``) and status."""
    path = route_label(scope)  # known once routing ran
    children = _CHILDREN.get((path, status))
    if children is None:
        children = _CHILDREN[(path, status)] = (
            LATENCY.labels(path),
            REQUESTS.labels(path, str(status)),
        )
    children[0].observe(seconds)
    children[1].inc()
