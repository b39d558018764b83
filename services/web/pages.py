"""Rendering pages: the hub's one jinja environment, safe headers, HTML error pages.

Templates live in ``notifiers/templates/web/`` and are rendered by
:func:`notifiers.render.render`, so they share its rules: autoescape on for every
``*.html.j2`` and ``*.atom.j2`` template, ``StrictUndefined``. No template marks user data
``|safe``.

Every page is sent with a strict Content-Security-Policy (no scripts at all, styles and
forms only from this origin), ``Referrer-Policy: same-origin`` (page URLs carry personal
tokens that must not leak to other sites; ``no-referrer`` would also make browsers send
``Origin: null`` on our own form posts, which the origin check must refuse) and
``Cache-Control: no-store``. The API app turns the hub's errors into
JSON problem documents; the web routes use :class:`HtmlRoute`, which turns them into
HTML pages first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import RedirectResponse, Response

from notifiers.render import environment
from schemas.errors import BusUnavailableError, ImpactbusError, InvalidInputError, NotFoundError
from services.directory.auth import AuthenticationError, PermissionDeniedError
from services.directory.links import LinkError

log = logging.getLogger("impactbus.web")

STATIC: Final = Path(__file__).parent / "static"
CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# The outbox shows emails in sandboxed srcdoc iframes, which inherit this policy: their
# inline styles must apply, their scripts never run (the sandbox has no allow-scripts).
CSP_OUTBOX: Final = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'"
)


def page(
    template: str,
    status: int = 200,
    *,
    csp: str = CSP,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> Response:
    """Render ``web/<template>`` into an HTML response.

    Args:
        template: the file name under ``notifiers/templates/web/``.
        status: the HTTP status.
        csp: the Content-Security-Policy.
        headers: more headers (e.g. ``Set-Cookie`` is set on the response instead).
        **context: the template's variables.
    """
    body = environment().get_template(f"web/{template}").render(**context)
    response = Response(body, status, media_type="text/html; charset=utf-8")
    response.headers.update(
        {
            "Content-Security-Policy": csp,
            "Referrer-Policy": "same-origin",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",  # personal, or changing with every post
        }
    )
    if headers:
        response.headers.update(headers)
    return response


def error_page(status: int, title: str, message: str) -> Response:
    """A small page that says what went wrong (and that nothing was changed)."""
    return page("error.html.j2", status, title=title, message=message, signed_in=False)


def see_other(url: str) -> Response:
    """``303 See Other``: after a successful form POST, show the result with a GET."""
    return RedirectResponse(url, 303, headers={"Referrer-Policy": "same-origin"})


def login_redirect(request: Request) -> Response:
    """Send the browser to the sign-in form, and back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return see_other(f"/login?next={quote(here, safe='')}")


def _page_for(request: Request, exc: Exception) -> Response:  # noqa: PLR0911 - one per error
    match exc:
        case LinkError():
            titles = {400: "This link is not valid", 403: "Not your link", 410: "Link expired"}
            return error_page(exc.status, titles.get(exc.status, "Link error"), str(exc))
        case AuthenticationError():
            return login_redirect(request)
        case PermissionDeniedError():
            return error_page(403, "Not allowed", str(exc))
        case NotFoundError() | RequestValidationError():
            return error_page(404, "Not found", "There is no such page.")
        case InvalidInputError():
            return error_page(400, "Cannot do that", str(exc))
        case BusUnavailableError():
            log.warning("web: %s", exc)
            return error_page(503, "Try again shortly", "The hub is not reachable right now.")
        case _:
            return error_page(500, "Something went wrong", str(exc))


class HtmlRoute(APIRoute):
    """A route whose errors become HTML pages (the API app's handlers would send JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap the handler: the hub's errors and bad paths become HTML pages."""
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except (ImpactbusError, RequestValidationError) as exc:
                return _page_for(request, exc)

        return handler


def stylesheet() -> Response:
    """The one stylesheet (small enough to read from disk on each request)."""
    return Response(
        (STATIC / "web.css").read_bytes(),
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
