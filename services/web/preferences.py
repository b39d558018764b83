"""The preference centre (``/preferences/<token>``) and one-click unsubscribe.

Both are reached from a message's personal, signed links (:mod:`services.directory.links`); every
change goes through :class:`services.directory.records.Directory`.

One-click unsubscribe follows RFC 8058: ``POST /unsubscribe/<token>`` (what a mail
provider sends for ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``) unsubscribes at
once and answers ``200`` with a small page, never a redirect; it needs no cookie and reads
no body. ``GET`` only shows what would be removed and a button: mail scanners fetch links,
and a fetch must change nothing. Repeating a POST is harmless (``200``, "already done").
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import available_timezones

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from notifiers.text import local_time, zone
from schemas.directory import FIXED_OFFSET_ZONES, Recipient, Subscription, version_of
from schemas.errors import NotFoundError
from schemas.targets import CHANNELS, Channel
from services.directory.links import (
    RecipientGoneError,
    UnsubscribeClaim,
    check_owner,
    check_version,
)
from services.web.forms import field_errors, read_form
from services.web.pages import HtmlRoute, page, see_other
from services.web.session import check_csrf, check_origin
from services.web.state import Web, WebState
from services.web.words import describe_pattern

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

Mode = Literal["immediate", "digest", "off"]
MODES: Final[tuple[Mode, ...]] = ("immediate", "digest", "off")
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_PAUSE_DAYS: Final = 365
# the zones input accepts: no fixed-offset legacy names (schemas.directory refuses them)
TIMEZONES: Final = tuple(
    sorted(available_timezones() - {"Factory", "localtime", *FIXED_OFFSET_ZONES})
)
NOTICES: Final = {
    "saved": "Your preferences are saved.",
    "paused": "Paused: nothing will be sent to you until the date below.",
    "resumed": "Welcome back: messages will reach you again.",
}


@dataclass(frozen=True, slots=True)
class Row:
    """One subscription as the pages show it."""

    sub: Subscription
    words: str


def channel_label(recipient: Recipient | None, channel: str) -> str:
    """``Email to maria@example.org``, ``Slack #steering``, ``Webhook``."""
    if channel == "email":
        return f"Email to {recipient.email}" if recipient and recipient.email else "Email"
    if channel == "slack":
        slack = recipient.slack_channel if recipient else None
        return f"Slack {slack}" if slack else "Slack"
    return "Webhook"


def channels_of(recipient: Recipient) -> list[Channel]:
    """The channels the recipient has a contact on."""
    contacts = {
        "email": recipient.email,
        "slack": recipient.slack_channel,
        "webhook": recipient.webhook_url,
    }
    return [c for c in CHANNELS if contacts[c]]


async def rows_of(web: WebState, subs: list[Subscription]) -> list[Row]:
    """Subscriptions in words, sorted as a reader scans them."""
    labels = await web.topic_labels([s.pattern for s in subs])
    rows = [Row(s, describe_pattern(s.pattern, web.settings.initiatives, labels)) for s in subs]
    return sorted(rows, key=lambda r: (r.words.casefold(), r.sub.channel))


async def _recipient_of(web: WebState, token: str) -> Recipient:
    recipient_id, version = web.signer.preferences_claim(token)
    try:
        recipient = await web.directory.get_recipient(recipient_id)
    except NotFoundError:
        raise RecipientGoneError("this address no longer receives anything from us") from None
    check_version(version, version_of(recipient.created), "recipient")
    return recipient


async def _render(
    web: WebState,
    token: str,
    recipient: Recipient,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    frequency, _, when = recipient.digest.partition("@")
    day, _, time = when.rpartition("-")
    subs = await web.directory.list_subscriptions(recipient=recipient.id)
    return page(
        "preferences.html.j2",
        status,
        token=token,
        recipient=recipient,
        rows=await rows_of(web, subs),
        channels=[(c, channel_label(recipient, c)) for c in channels_of(recipient)],
        modes=MODES,
        days=DAYS,
        # a zone stored before input refused it stays listed: never changed without a word
        timezones=TIMEZONES
        if recipient.timezone in TIMEZONES
        else (recipient.timezone, *TIMEZONES),
        digest={"frequency": frequency, "day": day or "mon", "time": time},
        paused=recipient.is_paused(datetime.now(UTC)),
        when=lambda moment: local_time(moment, zone(recipient.timezone)),  # the reader's zone
        errors=errors or {},
        form=form or {},
        notice=notice,
        signed_in=False,
    )


@router.get("/preferences/{token}")
async def preferences(token: str, web: Web, done: str | None = None) -> Response:
    """The preference centre of the recipient the token is bound to."""
    recipient = await _recipient_of(web, token)
    return await _render(web, token, recipient, notice=NOTICES.get(done or ""))


@router.post("/preferences/{token}")
async def change_preferences(token: str, request: Request, web: Web) -> Response:
    """Save the preference form, pause, or resume; nothing changes unless all is valid."""
    check_origin(request)
    form = await read_form(request)
    recipient = await _recipient_of(web, token)
    check_csrf(token, form.get("csrf"))
    action = form.get("action", "save")
    if action == "resume":
        await web.directory.put_recipient(recipient.model_copy(update={"paused_until": None}))
        return see_other(f"/preferences/{token}?done=resumed")
    if action == "pause":
        days = form.get("pause_days", "").strip()
        if not days.isdigit() or not 1 <= int(days) <= MAX_PAUSE_DAYS:
            error = {"pause_days": f"enter a number of days from 1 to {MAX_PAUSE_DAYS}"}
            return await _render(web, token, recipient, errors=error, form=form, status=422)
        until = datetime.now(UTC) + timedelta(days=int(days))
        await web.directory.put_recipient(recipient.model_copy(update={"paused_until": until}))
        return see_other(f"/preferences/{token}?done=paused")
    return await _save(web, token, recipient, form)


async def _save(web: WebState, token: str, recipient: Recipient, form: dict[str, str]) -> Response:
    errors: dict[str, str] = {}
    frequency, time = form.get("digest_frequency", "daily"), form.get("digest_time", "")
    schedule = f"weekly@{form.get('digest_day', '')}-{time}" if frequency == "weekly" else ""
    try:
        updated = Recipient.model_validate(
            {
                **recipient.model_dump(),
                "digest": schedule or f"daily@{time}",
                "timezone": form.get("timezone", recipient.timezone),
            }
        )
    except ValidationError as exc:
        errors.update(field_errors(exc))
        updated = recipient
    changes: list[tuple[Subscription, Mode, Channel]] = []
    allowed = channels_of(recipient)
    for sub in await web.directory.list_subscriptions(recipient=recipient.id):
        mode = next((m for m in MODES if m == form.get(f"mode-{sub.id}", sub.mode)), None)
        wanted = form.get(f"channel-{sub.id}", sub.channel)
        channel = next((c for c in allowed if c == wanted), None)
        if mode is None:
            errors[f"mode-{sub.id}"] = "choose immediately, in the digest, or off"
        if channel is None:
            errors[f"channel-{sub.id}"] = "choose a channel you have a contact on"
        if mode is not None and channel is not None:
            changes.append((sub, mode, channel))
    if errors:
        return await _render(web, token, recipient, errors=errors, form=form, status=422)
    if updated != recipient:
        await web.directory.put_recipient(updated)
    for sub, mode, channel in changes:
        await _apply(web, sub, mode, channel)
    return see_other(f"/preferences/{token}?done=saved")


async def _apply(web: WebState, sub: Subscription, mode: Mode, channel: Channel) -> None:
    if mode == "off":
        with contextlib.suppress(NotFoundError):
            await web.directory.unsubscribe(sub.id)
    elif channel != sub.channel:
        # the new one first: for a moment both may deliver, but nothing is lost
        await web.directory.subscribe(sub.recipient, sub.pattern, channel, mode)
        with contextlib.suppress(NotFoundError):
            await web.directory.unsubscribe(sub.id)
    elif mode != sub.mode:
        await web.directory.put_subscription(sub.model_copy(update={"mode": mode}))


# ------------------------------------------------------------------------ unsubscribe


async def _claimed(web: WebState, token: str) -> tuple[UnsubscribeClaim, list[Subscription]]:
    """The claim of an unsubscribe token and the subscriptions it still covers.

    Raises:
        LinkError: forged, expired, or naming another recipient's subscription.
    """
    claim = web.signer.read_unsubscribe(token)
    if claim.subscription is not None:
        try:
            sub = await web.directory.get_subscription(claim.subscription)
        except NotFoundError:
            return claim, []
        check_owner(claim.recipient, sub.recipient)
        check_version(claim.version, version_of(sub.created_at), "subscription")
        return claim, [sub]
    if claim.version is not None:
        try:
            recipient = await web.directory.get_recipient(claim.recipient)
        except NotFoundError:
            return claim, []
        check_version(claim.version, version_of(recipient.created), "recipient")
    subs = await web.directory.list_subscriptions(recipient=claim.recipient)
    return claim, [s for s in subs if s.mode == "digest" and s.channel == claim.digest_channel]


async def _unsubscribe_page(
    web: WebState, token: str, claim: UnsubscribeClaim, subs: list[Subscription], state: str
) -> Response:
    try:
        recipient: Recipient | None = await web.directory.get_recipient(claim.recipient)
    except NotFoundError:
        recipient = None
    prefs = (
        web.signer.preferences_token(recipient.id, version_of(recipient.created))
        if recipient
        else None
    )
    tz = zone(recipient.timezone) if recipient else UTC
    return page(
        "unsubscribe.html.j2",
        now=datetime.now(UTC),
        when=lambda moment: local_time(moment, tz),  # the reader's zone
        token=token,
        state=state if subs else "gone",
        rows=await rows_of(web, subs),
        digest=claim.digest_channel is not None,
        channel_label=lambda c: channel_label(recipient, c),
        preferences_url=f"/preferences/{prefs}" if prefs else None,
        signed_in=False,
    )


@router.get("/unsubscribe/{token}")
async def confirm_unsubscribe(token: str, web: Web) -> Response:
    """Show what the link would unsubscribe from, and a button. Changes nothing."""
    claim, subs = await _claimed(web, token)
    return await _unsubscribe_page(web, token, claim, subs, "confirm")


@router.post("/unsubscribe/{token}")
async def one_click_unsubscribe(token: str, web: Web) -> Response:
    """RFC 8058 one-click: unsubscribe at once; ``200`` with a page, no redirect."""
    claim, subs = await _claimed(web, token)
    for sub in subs:
        with contextlib.suppress(NotFoundError):
            await web.directory.unsubscribe(sub.id)
    return await _unsubscribe_page(web, token, claim, subs, "done" if subs else "gone")
