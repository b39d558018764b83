"""Posting an update from the browser: sign in with a token, fill the form, preview, publish.

``/login`` turns a backbone (or admin) API token into a session cookie
(:mod:`services.web.session`). ``/post`` first asks for the initiative (one of the token's)
and the kind, then shows that kind's form. "Preview" validates and shows the event as
partners will see it; "Publish" validates again and hands it to
:func:`services.pipeline.ingest.publish_event`, the same path as the CLI and the HTTP API. Nothing
is published while a field is invalid; each error is shown beside its field.

The event id is fixed when the form is first shown and travels with it, so a form sent
twice (a double click, a reload) is stored once: ``Nats-Msg-Id`` = hash(source, id).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response
from ulid import ULID

from schemas.subjects import EventKind
from services.directory.auth import AuthenticationError, Principal
from services.directory.ratelimit import RateLimitedError
from services.pipeline.ingest import publish_event
from services.web.forms import KIND_FIELDS, event_from_form, kind_of, read_form
from services.web.pages import HtmlRoute, login_redirect, page, see_other
from services.web.preferences import TIMEZONES
from services.web.session import (
    WEB_ROLES,
    Session,
    check_csrf,
    check_origin,
    current_session,
    end_session,
    start_session,
)
from services.web.state import Web, WebState

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

_EVENT_ID: Final = re.compile(r"^[\x21-\x7e]{1,128}$")
STATUSES: Final = (
    ("planned", "Planned"),
    ("reached", "Reached"),
    ("at-risk", "At risk"),
    ("missed", "Missed"),
)
KINDS: Final[tuple[tuple[EventKind, str], ...]] = (
    ("metric", "Metric update"),
    ("milestone", "Milestone"),
    ("meeting", "Meeting notes"),
    ("update", "Update"),
)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/post"


@router.get("/login")
async def login_form(web: Web, next: str | None = None) -> Response:
    """The sign-in form."""
    return page("login.html.j2", next=safe_next(next), errors={}, signed_in=False)


@router.post("/login")
async def login(request: Request, web: Web) -> Response:
    """Check the pasted API token; on success set the session cookie and go on."""
    check_origin(request)
    form = await read_form(request)
    target = safe_next(form.get("next"))
    token = form.get("token", "").strip()
    address = request.client.host if request.client else "unknown"
    try:
        web.throttle.check(address, token)
    except RateLimitedError as exc:
        return _too_many(exc)
    error = None
    try:
        principal = await web.auth.verify(f"Bearer {token}")
    except AuthenticationError as exc:
        error = f"That token is not valid ({exc})."
        web.throttle.failed(address, token)
    else:
        if principal.role not in WEB_ROLES:
            error = f"Sign in with a backbone token: this one is a {principal.role} token."
    if error is not None:
        return page("login.html.j2", 401, next=target, errors={"token": error}, signed_in=False)
    response = see_other(target)
    start_session(response, request, web, principal.token_id)
    return response


def _too_many(exc: RateLimitedError) -> Response:
    wait = exc.retry_after_header
    return page(
        "error.html.j2",
        429,
        headers={"Retry-After": wait},
        title="Too many sign-in attempts",
        message=f"Too many wrong tokens were tried from here or on this token. "
        f"Nothing was checked: wait {wait} seconds and try again.",
        signed_in=False,
    )


@router.post("/logout")
async def logout(request: Request, web: Web) -> Response:
    """Sign out (the form carries the session's CSRF value)."""
    check_origin(request)
    session = await current_session(request, web)
    form = await read_form(request)
    if session is not None:
        check_csrf(session.csrf, form.get("csrf"))
    response = see_other("/login")
    end_session(response, request, web)
    return response


async def choices_of(web: WebState, principal: Principal) -> list[tuple[str, str]]:
    """(id, name) of the initiatives the user may post to."""
    ids = await web.initiatives() if principal.role == "admin" else sorted(principal.initiatives)
    return [(i, web.name(i)) for i in ids]


def _form_page(
    web: WebState,
    session: Session,
    choices: list[tuple[str, str]],
    *,
    kind: EventKind | None,
    initiative: str | None,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> Response:
    return page(
        "post.html.j2",
        status,
        csrf=session.csrf,
        signed_in=True,
        choices=choices,
        kinds=KINDS,
        kind=kind,
        initiative=initiative,
        initiative_name=web.name(initiative) if initiative else "",
        fields=KIND_FIELDS[kind] if kind else (),
        values=values,
        errors=errors,
        statuses=STATUSES,
        timezones=TIMEZONES,
        hub_timezone=web.hub.timezone,  # a meeting's zone unless the form says another
    )


@router.get("/post")
async def post_form(
    request: Request, web: Web, initiative: str | None = None, kind: str | None = None
) -> Response:
    """Step 1: choose initiative and kind; step 2 (both chosen): that kind's form."""
    session = await current_session(request, web)
    if session is None:
        return login_redirect(request)
    choices = await choices_of(web, session.principal)
    chosen = kind_of(kind)
    allowed = initiative in {c[0] for c in choices}
    values = {"event_id": str(ULID()), "held_tz": web.hub.timezone, "direction": "increase"}
    return _form_page(
        web,
        session,
        choices,
        kind=chosen if allowed else None,
        initiative=initiative if allowed else None,
        values=values,
        errors={},
    )


@router.post("/post")
async def post_submit(request: Request, web: Web) -> Response:
    """Validate the form; show it again with errors, show the preview, or publish."""
    check_origin(request)
    session = await current_session(request, web)
    if session is None:
        return login_redirect(request)
    form = await read_form(request)
    check_csrf(session.csrf, form.get("csrf"))
    choices = await choices_of(web, session.principal)
    kind, initiative = kind_of(form.get("kind")), form.get("initiative", "")
    if kind is None or initiative not in {c[0] for c in choices}:
        errors = {"initiative": "choose one of your initiatives and a kind"}
        return _form_page(
            web, session, choices, kind=None, initiative=None, values={}, errors=errors, status=422
        )
    if not session.principal.may_publish(kind, initiative):
        errors = {"initiative": f"your token may not publish {kind} events here"}
        return _form_page(
            web,
            session,
            choices,
            kind=kind,
            initiative=initiative,
            values=form,
            errors=errors,
            status=403,
        )
    event_id = form.get("event_id", "")
    if not _EVENT_ID.fullmatch(event_id):
        event_id = form["event_id"] = str(ULID())
    result = event_from_form(
        form,
        kind,
        initiative,
        source=session.principal.source,
        event_id=event_id,
        now=datetime.now(UTC),
    )
    action = form.get("action", "preview")
    if result.event is None or action == "edit":
        status = 200 if action == "edit" else 422
        return _form_page(
            web,
            session,
            choices,
            kind=kind,
            initiative=initiative,
            values=form,
            errors=result.errors,
            status=status,
        )
    if action != "publish":
        hidden = {k: v for k, v in form.items() if k not in ("csrf", "action")}
        return page(
            "preview.html.j2",
            csrf=session.csrf,
            signed_in=True,
            event=result.event,
            hidden=hidden,
            initiative_name=web.name(initiative),
            h=web.helpers,
        )
    await publish_event(web.bus, result.event)
    return see_other(f"/initiatives/{quote(initiative)}?published={quote(event_id, safe='')}")
