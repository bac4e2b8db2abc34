"""The API's request metrics are labelled by route template, derived from the app's routes."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.access import RequestLog


def _requests(path: str, status: str) -> float:
    value = REGISTRY.get_sample_value("api_requests_total", {"path": path, "status": status})
    return value or 0.0


async def test_a_path_with_an_id_counts_under_its_route_and_an_unknown_path_under_other() -> None:
    app = Starlette(routes=[Route("/things/{thing_id}", lambda _: PlainTextResponse("ok"))])
    app.add_middleware(RequestLog)
    before_route = _requests("/things/{thing_id}", "200")
    before_other = _requests("other", "404")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/things/a")).status_code == 200
        assert (await client.get("/things/b")).status_code == 200
        assert (await client.get("/scanner/etc/passwd")).status_code == 404
    assert _requests("/things/{thing_id}", "200") - before_route == 2
    assert _requests("/things/a", "200") == 0
    assert _requests("other", "404") - before_other == 1
