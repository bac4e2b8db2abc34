"""The live dashboard: static files served by the API server, a client of the public API.

The page holds no secrets and reads nothing but the public API with the key a person types in,
so serving it needs no authentication. Only the files shipped in ``api/dashboard/`` are served:
the asset name is looked up in a fixed table, never joined onto a filesystem path.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Everything the page loads comes from this server: the policy makes a stray CDN link fail loudly.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


def _assets(folder: Path) -> dict[str, Path]:
    """The servable files of ``folder`` by name: plain files with a known content type."""
    return {
        p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in CONTENT_TYPES
    }


ASSETS = _assets(DASHBOARD_DIR)

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> Response:
    return Response(path.read_bytes(), media_type=CONTENT_TYPES[path.suffix], headers=_HEADERS)


@router.get("/dashboard")
async def dashboard_page() -> Response:
    """The dashboard page; its assets are relative links to ``/dashboard/<asset>``."""
    return _file(ASSETS["index.html"])


@router.get("/dashboard/{asset}")
async def dashboard_asset(asset: str) -> Response:
    """One of the dashboard's own files; any other name is a 404 with the usual error body."""
    path = ASSETS.get(asset)
    if path is None:
        message = f"no dashboard asset named {asset!r}; known: {', '.join(sorted(ASSETS))}"
        body = {"error": {"code": "NOT_FOUND", "message": message, "status": 404}}
        return JSONResponse(body, status_code=404)
    return _file(path)
