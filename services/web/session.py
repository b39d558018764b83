"""Signing in to the web form with an API token, and the CSRF checks of every form.

A backbone (or admin) user pastes their API token once; the hub checks it with
:class:`services.directory.auth.Authenticator` and sets a session cookie: ``HttpOnly``,
``SameSite=Lax``, ``Secure`` over HTTPS, signed (salt ``impactbus.session``) and carrying
only the token's *id* and a random CSRF value, never the secret. Each request looks the
token record up again, so a revoked token signs its sessions out at once.

CSRF: the post form carries the session's CSRF value in a hidden field; the preference
forms carry their own URL token (the signed token authorises; the copy in the form proves
the form came from that page). On top, a POST whose ``Origin`` is another site is refused.
One-click unsubscribe is the exception on purpose: RFC 8058 POSTs come from mail
providers, without cookies or an origin of ours.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from fastapi import Request
from starlette.responses import Response

from schemas.errors import ImpactbusError
from services.bus import KV_TOKENS
from services.bus.kv import open_kv
from services.directory.auth import PermissionDeniedError, Principal, TokenRecord
from services.directory.links import LinkError
from services.web.state import WebState

COOKIE: Final = "impactbus_session"
WEB_ROLES: Final = frozenset({"backbone", "admin"})


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser."""

    principal: Principal
    csrf: str


def start_session(response: Response, request: Request, web: WebState, token_id: str) -> None:
    """Set the session cookie for ``token_id`` on ``response``."""
    value = web.signer.sign("session", {"t": token_id, "c": secrets.token_urlsafe(24)})
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(web.settings.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="lax",
        secure=_https(request, web),
    )


def end_session(response: Response, request: Request, web: WebState) -> None:
    """Remove the session cookie."""
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="lax", secure=_https(request, web)
    )


def _https(request: Request, web: WebState) -> bool:
    return request.url.scheme == "https" or (web.hub.public_url or "").startswith("https://")


async def current_session(request: Request, web: WebState) -> Session | None:
    """The signed-in user, or ``None`` (no cookie, expired, revoked, or not allowed)."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    try:
        claim = web.signer.check("session", value, int(web.settings.session_hours * 3600))
    except LinkError:
        return None
    token_id, csrf = claim.get("t"), claim.get("c")
    if not token_id or not csrf:
        return None
    record = await _record(web, token_id)
    if record is None or record.revoked or record.role not in WEB_ROLES:
        return None
    return Session(Principal.of(record), csrf)


async def _record(web: WebState, token_id: str) -> TokenRecord | None:
    try:
        entry = await (await open_kv(web.bus, KV_TOKENS)).get(token_id)
    except ImpactbusError:  # unknown, or NATS is away: no session either way
        return None
    return TokenRecord.model_validate_json(entry.value) if entry.value else None


def check_csrf(expected: str, submitted: str | None) -> None:
    """Refuse a form whose CSRF field does not match.

    Raises:
        PermissionDeniedError: missing or different.
    """
    if not submitted or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise PermissionDeniedError(
            "this form is out of date or came from another page: reload it and try again"
        )


def check_origin(request: Request) -> None:
    """Refuse a POST sent by a page of another site (when the browser says so).

    Raises:
        PermissionDeniedError: ``Origin`` names another site.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin.split("://", 1)[-1].rstrip("/") != host:
        raise PermissionDeniedError("this form was sent from another site: nothing was changed")
