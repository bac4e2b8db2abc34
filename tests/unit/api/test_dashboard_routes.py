"""The dashboard's files as the API server serves them: only its own, typed, offline, unlisted."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.dashboard_routes import ASSETS, DASHBOARD_DIR, router


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dashboard.test") as c:
        yield c


async def test_the_page_is_html_that_loads_its_assets_from_beside_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert 'src="dashboard/app.js"' in response.text
    assert 'href="dashboard/app.css"' in response.text


@pytest.mark.parametrize(
    ("asset", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
        ("index.html", "text/html; charset=utf-8"),
    ],
)
async def test_each_asset_is_served_with_its_content_type(
    client: httpx.AsyncClient, asset: str, content_type: str
) -> None:
    response = await client.get(f"/dashboard/{asset}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (DASHBOARD_DIR / asset).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/nope.js",
        "/dashboard/..%2Fdashboard_routes.py",  # an encoded slash is not a way out
        "/dashboard/%2E%2E%2Fmain.py",
        "/dashboard/..",
        "/dashboard/../main.py",
        "/dashboard/app.js%00.css",
    ],
)
async def test_nothing_outside_the_dashboard_folder_is_served(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    if response.headers["content-type"].startswith("application/json"):
        body = response.json()
        assert body.get("error", {}).get("status", 404) == 404
    assert "import" not in response.text  # no Python source leaked


async def test_unknown_assets_get_the_usual_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard/chart.js")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "NOT_FOUND" and error["status"] == 404
    assert "chart.js" in error["message"] and "app.js" in error["message"]


def test_only_files_with_a_known_type_are_servable() -> None:
    assert set(ASSETS) == {"index.html", "app.js", "customer.js", "app.css", "favicon.svg"}


async def test_the_page_loads_nothing_from_another_host(client: httpx.AsyncClient) -> None:
    csp = (await client.get("/dashboard")).headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    for name, path in ASSETS.items():
        text = path.read_text()
        # The SVG namespace is a name, not a fetch; any other absolute URL would be.
        urls = re.findall(
            r"(?:https?:)?//[\w.-]+\.\w+", text.replace("http://www.w3.org/2000/svg", "")
        )
        assert not urls, f"{name} refers to another host: {urls}"


def test_the_dashboard_is_not_in_the_openapi_document() -> None:
    from api.main import create_app

    paths = create_app().openapi()["paths"]
    assert not [p for p in paths if p.startswith("/dashboard")]
