"""``/docs``: Swagger UI for the API, served entirely by the hub.

FastAPI's own ``/docs`` and ``/redoc`` load their scripts and styles from a CDN, so they
are blank on a machine without internet (a partner's laptop at a community meeting, an
air-gapped deployment). They are switched off in :func:`services.api.app.create_app` and
this router serves Swagger UI instead: the page, a small start script and the Swagger UI
dist files shipped by the ``fastapi-offline`` package (kept current with Swagger UI 5,
which renders the OpenAPI 3.1 document FastAPI writes). Only its files are used, not its
app factory, so the page carries no inline script and a Content-Security-Policy that
lets it load nothing from anywhere but this origin.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import APIRouter, Request
from starlette.responses import FileResponse, HTMLResponse, Response

from schemas.errors import NotFoundError

router = APIRouter(include_in_schema=False)

ASSETS: Final = Path(fastapi_offline.__file__).parent / "static"
PREFIX: Final = "/docs/assets"
# name -> media type: only these files are served, never a path the client makes up
FILES: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
# Swagger UI sets element styles from script and ships data: icons; it fetches the
# OpenAPI document from here. validatorUrl is off: its badge is an image from elsewhere.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
START: Final = """\
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
"""


def docs_page(title: str) -> str:
    """The Swagger UI page (``title`` already escaped): every asset from here, no inline script."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Swagger UI</title>
<link rel="icon" type="image/png" href="{PREFIX}/favicon.png">
<link rel="stylesheet" href="{PREFIX}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{PREFIX}/swagger-ui-bundle.js"></script>
<script src="{PREFIX}/start.js"></script>
</body>
</html>
"""


def _headers(cache: str) -> dict[str, str]:
    return {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}


@router.get("/docs")
async def docs(request: Request) -> Response:
    """Swagger UI for the API's OpenAPI document (``/openapi.json``)."""
    headers = {**_headers("no-cache"), "Content-Security-Policy": CSP}
    return HTMLResponse(docs_page(html.escape(request.app.title)), headers=headers)


@router.get(f"{PREFIX}/start.js")
async def start_script() -> Response:
    """The script that starts Swagger UI on the page (a file, so CSP needs no inline)."""
    return Response(START, media_type=FILES["swagger-ui-bundle.js"], headers=_headers("no-cache"))


@router.get(PREFIX + "/{name}")
async def asset(name: str) -> Response:
    """One of Swagger UI's dist files, from the installed package."""
    media_type = FILES.get(name)
    if media_type is None:
        raise NotFoundError(f"no docs asset {name!r}")
    return FileResponse(ASSETS / name, media_type=media_type, headers=_headers("max-age=86400"))
