"""``/docs``: Swagger UI from the files of the installed ``fastapi-offline`` package, no CDN.

FastAPI's default page loads its script from a CDN without integrity checks, on the origin
where the dashboard keeps an API key: whoever controls that script could read the key. Here
every asset comes from this server, and a Content-Security-Policy allows no other script than
those files and the page's one inline script (by its hash). ``INTERACTION_SUMMARY_API_DOCS=false``
removes the page altogether (``/openapi.json`` stays: clients are generated from it).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

ASSET_DIR = resources.files("fastapi_offline") / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


def _page(openapi_url: str, title: str) -> tuple[bytes, str]:
    html = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url="/docs/swagger-ui-bundle.js",
        swagger_css_url="/docs/swagger-ui.css",
        swagger_favicon_url="/docs/favicon.png",
    ).body
    inline = re.findall(rb"<script>(.*?)</script>", bytes(html), flags=re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in inline
    )
    policy = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )
    return bytes(html), policy


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its three assets; nothing else of the package is reachable."""
    assert app.openapi_url is not None
    html, policy = _page(app.openapi_url, f"{app.title} - API documentation")
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    files = {name: (ASSET_DIR / name).read_bytes() for name in ASSETS}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)

    @app.get("/docs/{asset}", include_in_schema=False)
    async def docs_asset(asset: str) -> Response:
        if asset not in files:
            body = {"error": {"code": "NOT_FOUND", "message": f"no asset {asset!r}", "status": 404}}
            return JSONResponse(body, status_code=404)
        return Response(
            files[asset],
            media_type=ASSETS[asset],
            headers={"Cache-Control": "public, max-age=86400", **headers},
        )
