"""An initiative's page (``/initiatives/<id>``) and its Atom feeds.

Both read the initiative's recent events straight from the EVENTS stream (through
:func:`services.api.feeds.read_feed`, the API's reader). The page shows the metrics with
progress bars, milestones, meetings and updates as the digest computes them
(:func:`services.digest.view.build_digest`), then the latest events.

Feeds are Atom 1.0 (RFC 4287): ``/feeds/<initiative>.atom`` and
``/feeds/<initiative>/<kind>.atom``, newest first, each entry's content the event as HTML
(escaped by the autoescaping template, as ``type="html"`` requires). Page and feeds are
public unless ``IMPACTBUS_WEB_PUBLIC=false``, when they need a signed-in session (and
feed readers cannot read them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from notifiers.presentation import headline
from notifiers.render import environment, render
from schemas.directory import Recipient
from schemas.errors import InvalidInputError, NotFoundError
from schemas.events import Event, parse_event
from schemas.subjects import EventKind, validate_token
from services.api.feeds import feed_filter, read_feed
from services.digest.view import build_digest
from services.web.forms import kind_of
from services.web.pages import HtmlRoute, login_redirect, page
from services.web.session import current_session
from services.web.state import Web, WebState
from services.web.words import KIND_PLURALS, EventHelpers

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

PAGE_EVENTS: Final = 200
LATEST: Final = 20
FEED_ENTRIES: Final = 50
UTC_HELPERS: Final = EventHelpers()


def _initiative(value: str) -> str:
    try:
        return validate_token(value, "initiative")
    except InvalidInputError:
        raise NotFoundError(f"no initiative {value!r}") from None


async def recent_events(
    web: WebState, initiative: str, kind: EventKind | None, limit: int
) -> list[Event]:
    """The initiative's last ``limit`` events (of one kind), newest first."""
    page_ = await read_feed(web.bus, feed_filter(initiative, kind), None, limit)
    events = [parse_event(raw) for raw in page_.events]
    return sorted(events, key=lambda e: e.time, reverse=True)


async def _allowed(request: Request, web: WebState) -> bool:
    return web.settings.public or await current_session(request, web) is not None


@router.get("/initiatives/{initiative}")
async def initiative_page(
    initiative: str, request: Request, web: Web, published: str | None = None
) -> Response:
    """Metrics with progress bars, milestones, meetings, updates and the latest events."""
    initiative = _initiative(initiative)
    if not await _allowed(request, web):
        return login_redirect(request)
    events = await recent_events(web, initiative, None, PAGE_EVENTS)
    session = await current_session(request, web)
    return page(
        "initiative.html.j2",
        **page_context(
            initiative,
            web.name(initiative),
            events,
            datetime.now(UTC),
            published=published,
            csrf=session.csrf if session else None,
            helpers=web.helpers,
        ),
    )


def page_context(
    initiative: str,
    name: str,
    events: list[Event],
    now: datetime,
    *,
    published: str | None = None,
    csrf: str | None = None,
    helpers: EventHelpers = UTC_HELPERS,
) -> dict[str, Any]:
    """What ``web/initiative.html.j2`` shows of ``events`` (newest first) at ``now``.

    Args:
        initiative: the initiative's token.
        name: its name, as people know it.
        events: its recent events, newest first.
        now: the current time (what is overdue or stale).
        published: the id of an event just posted from the form, to confirm it.
        csrf: the signed-in session's CSRF token (``None``: not signed in).
        helpers: how events are shown; their ``zone`` is the page's (the hub's zone).
    """
    # The page is read by anyone: the digest view is built for a viewer in the page's zone.
    viewer = Recipient(id="web", timezone=str(helpers.zone), digest="daily@08:00")
    view = build_digest(viewer, events, {}, now)
    return {
        "initiative": initiative,
        "name": name,
        "section": view.initiatives[0] if view.initiatives else None,
        "latest": events[:LATEST],
        "kinds": KIND_PLURALS,
        "published": published,
        "signed_in": csrf is not None,
        "csrf": csrf or "",
        "h": helpers,
    }


def render_page(
    initiative: str,
    name: str,
    events: list[Event],
    now: datetime,
    *,
    helpers: EventHelpers = UTC_HELPERS,
) -> str:
    """The initiative page's HTML for a reader who is not signed in (pure)."""
    template = environment().get_template("web/initiative.html.j2")
    return template.render(**page_context(initiative, name, events, now, helpers=helpers))


@router.get("/feeds/{initiative}.atom")
async def initiative_feed(initiative: str, request: Request, web: Web) -> Response:
    """Atom feed of every event of one initiative."""
    return await _feed(request, web, _initiative(initiative), None)


@router.get("/feeds/{initiative}/{kind}.atom")
async def kind_feed(initiative: str, kind: str, request: Request, web: Web) -> Response:
    """Atom feed of one kind of event of one initiative."""
    chosen = kind_of(kind)
    if chosen is None:
        raise NotFoundError(f"no kind {kind!r}")
    return await _feed(request, web, _initiative(initiative), chosen)


def base_url(request: Request, web: WebState) -> str:
    """The configured public URL, else the one the request came to."""
    return (web.hub.public_url or str(request.base_url)).rstrip("/")


async def _feed(
    request: Request, web: WebState, initiative: str, kind: EventKind | None
) -> Response:
    if not await _allowed(request, web):
        return Response("sign in to read this feed", 401, media_type="text/plain")
    events = await recent_events(web, initiative, kind, FEED_ENTRIES)
    body = render_feed(
        initiative, web.name(initiative), kind, events, base_url(request, web), helpers=web.helpers
    )
    return Response(
        body,
        media_type="application/atom+xml; charset=utf-8",
        headers={"Cache-Control": "public, max-age=60", "X-Content-Type-Options": "nosniff"},
    )


def render_feed(
    initiative: str,
    name: str,
    kind: EventKind | None,
    events: list[Event],
    base: str,
    *,
    helpers: EventHelpers = UTC_HELPERS,
) -> str:
    """The Atom document of ``events`` (newest first) of one initiative (pure).

    Args:
        initiative: the initiative's token.
        name: its name, the feed's title.
        kind: the one kind the feed carries, or ``None`` for all.
        events: the entries, newest first.
        base: the hub's public URL, without a trailing ``/``.
        helpers: how events are shown (times in the hub's zone).
    """
    entries = [
        {
            "event": e,
            "title": headline(e),
            "html": render("web/_event.html.j2", event=e, h=helpers),
        }
        for e in events
    ]
    path = f"/feeds/{initiative}" + (f"/{kind}" if kind else "") + ".atom"
    return render(
        "web/feed.atom.j2",
        title=f"{name}: {KIND_PLURALS[kind]}" if kind else name,
        feed_id=f"{base}{path}",
        self_url=f"{base}{path}",
        page_url=f"{base}/initiatives/{initiative}",
        updated=(events[0].time if events else datetime(2000, 1, 1, tzinfo=UTC)).isoformat(),
        entries=entries,
        initiative=initiative,
    )
