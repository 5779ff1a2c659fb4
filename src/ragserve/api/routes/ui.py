"""The web UI: ``/`` serves its page and ``/ui/...`` its static assets, shipped inside the package.

The UI is plain HTML, CSS and ES modules (no build step) that talk only to the public API v1.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parents[2] / "ui_static"

# Everything the page loads comes from this origin; no inline scripts or styles.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)
_assets = StaticFiles(directory=UI_DIR)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(
        UI_DIR / "index.html",
        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/ui/{path:path}")
async def asset(path: str, request: Request) -> Response:
    """A file under ``ui_static``; StaticFiles refuses paths that leave the directory (404)."""
    response = await _assets.get_response(path, request.scope)
    response.headers["Cache-Control"] = "no-cache"
    return response
