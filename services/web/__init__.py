"""The web face of the hub, as server-rendered HTML.

The preference centre, one-click unsubscribe, the post form, initiative pages, Atom
feeds and the dev outbox.

:data:`router` is included by the API app (``services.api.app``), so the pages share the
API's connection, directory and token authenticator (see :mod:`services.web.state`).

Pages::

    GET  /preferences/<token>          preference centre (signed link, no login)
    POST /preferences/<token>          save / pause / resume
    GET  /unsubscribe/<token>          confirmation page with a button (changes nothing)
    POST /unsubscribe/<token>          RFC 8058 one-click unsubscribe: 200, no redirect
    GET  /login, POST /login, /logout  sign in with a backbone API token
    GET  /post, POST /post             post an update: choose, fill, preview, publish
    GET  /initiatives/<id>             metrics with progress, milestones, meetings, updates
    GET  /feeds/<id>.atom              Atom 1.0 feed (also /feeds/<id>/<kind>.atom)
    GET  /outbox                       what the dev outbox caught (signed in)
    GET  /static/web.css               the stylesheet
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from services.web import initiative, outbox, post, preferences
from services.web.pages import stylesheet

router = APIRouter(include_in_schema=False)
for _module in (preferences, post, initiative, outbox):
    router.include_router(_module.router)


@router.get("/static/web.css")
async def css() -> Response:
    """The stylesheet."""
    return stylesheet()


__all__ = ["router"]
