"""Recipients and subscriptions over HTTP, through :class:`services.directory.records.Directory`.

The same code paths as the CLI, so the same rules hold (derived subscription ids, a
contact required on the channel, deleting a recipient deletes their subscriptions). On
top, the token's role decides (see :mod:`services.directory.access`): backbone tokens add and remove
subscriptions on their initiatives, and change or delete a recipient only when everything
that recipient follows is on their initiatives; a partner manages its own recipient,
subscribes it to its initiatives and may drop any of its subscriptions.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.responses import Response

from schemas.directory import Recipient, Subscription
from schemas.errors import InvalidInputError, NotFoundError
from schemas.events import describe
from schemas.subjects import validate_pattern
from schemas.targets import Channel
from schemas.text import Token
from services.api.problems import responses
from services.api.state import ApiState, Caller, State, read_json
from services.directory.access import (
    recipient_change,
    recipient_deletion,
    recipient_reading,
    subscription_added,
    subscription_removed,
)
from services.directory.auth import Principal
from services.directory.records import UnreadableRecordError

Force = Annotated[
    bool,
    Query(description="also stop the subscriptions whose contact the change removes"),
]

router = APIRouter(tags=["directory"])

RecipientId = Annotated[str, Path(description="recipient id", examples=["maria"])]


class SubscriptionIn(BaseModel):
    """A new subscription: the hub derives its id from (recipient, pattern, channel)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipient: Token
    pattern: str
    channel: Channel
    mode: Literal["immediate", "digest"] = "immediate"


_RECIPIENT_EXAMPLE: Final[dict[str, object]] = {
    "id": "maria",
    "name": "Maria Lopez",
    "organisation": "Somerville Health Alliance",
    "email": "maria@example.org",
    "slack_channel": None,
    "webhook_url": None,
    "timezone": "America/New_York",
    "digest": "weekly@mon-08:00",
    "locale": "en",
    "paused_until": None,
    "disabled_channels": [],
    "owner": None,
}
_SUBSCRIPTION_EXAMPLE: Final[dict[str, object]] = {
    "id": "maria-3f2a9c1b7e4d",
    "recipient": "maria",
    "pattern": "impact.somerville.>",
    "channel": "email",
    "mode": "digest",
    "created_at": "2026-10-01T09:30:00Z",
}


def _ok(example: object, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": example}}}


def _check_recipient(caller: Principal, recipient_id: str) -> None:
    if not caller.may_manage_recipient(recipient_id):
        raise caller.deny(f"manage recipient {recipient_id!r}")


# ------------------------------------------------------------------------- recipients


@router.get(
    "/v1/recipients",
    response_model=list[Recipient],
    summary="List recipients",
    responses={200: _ok([_RECIPIENT_EXAMPLE]), **responses(401, 403, 429)},
)
async def list_recipients(state: State, caller: Caller) -> list[Recipient]:
    """Every recipient the token may manage (a partner: its own)."""
    if caller.role == "system":
        raise caller.deny("list recipients")
    rows = await state.directory.list_recipients()
    follows: dict[str, list[str]] = {}
    for sub in await state.directory.list_subscriptions():
        follows.setdefault(sub.recipient, []).append(sub.pattern)
    return [
        r
        for r in rows
        if caller.may_manage_recipient(r.id)
        and recipient_reading(caller, r.id, follows.get(r.id, ())).allowed
    ]


@router.get(
    "/v1/recipients/{recipient_id}",
    response_model=Recipient,
    summary="Get a recipient",
    responses={200: _ok(_RECIPIENT_EXAMPLE), **responses(401, 403, 404, 409, 422, 429)},
)
async def get_recipient(recipient_id: RecipientId, state: State, caller: Caller) -> Recipient:
    """One recipient (a backbone token: one who follows its initiatives, or nothing yet)."""
    _check_recipient(caller, recipient_id)
    recipient = await state.directory.get_recipient(recipient_id)
    subs = await state.directory.list_subscriptions(recipient=recipient_id)
    recipient_reading(caller, recipient_id, [s.pattern for s in subs]).enforce()
    return recipient


@router.put(
    "/v1/recipients/{recipient_id}",
    response_model=Recipient,
    summary="Create or replace a recipient",
    responses={
        200: _ok(_RECIPIENT_EXAMPLE, "replaced"),
        201: _ok(_RECIPIENT_EXAMPLE, "created"),
        **responses(400, 401, 403, 409, 413, 415, 422, 429),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Recipient"},
                    "example": {k: v for k, v in _RECIPIENT_EXAMPLE.items() if v not in (None, [])},
                }
            },
        }
    },
)
async def put_recipient(
    recipient_id: RecipientId, request: Request, state: State, caller: Caller, force: Force = False
) -> Response:
    """Create or replace a recipient; ``id`` in the body may be left out.

    A backbone token may replace the contacts, pause or channels of a recipient only when
    every subscription of that recipient is on one of its initiatives (or it is new).
    """
    _check_recipient(caller, recipient_id)
    fields = await read_json(request, state.settings.max_body)
    if not isinstance(fields, dict):
        raise InvalidInputError("body: expected a JSON object (a recipient)")
    current, existed = await _current(state, caller, recipient_id)
    return await _store(state, caller, recipient_id, current, fields, existed=existed, force=force)


@router.patch(
    "/v1/recipients/{recipient_id}",
    response_model=Recipient,
    summary="Change some fields of a recipient",
    responses={
        200: _ok(_RECIPIENT_EXAMPLE, "changed"),
        **responses(400, 401, 403, 404, 413, 422, 429),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "description": "the fields to change"},
                    "example": {"email": "maria.lopez@example.org"},
                }
            },
        }
    },
)
async def patch_recipient(
    recipient_id: RecipientId, request: Request, state: State, caller: Caller, force: Force = False
) -> Response:
    """Merge the given fields into the stored recipient (``null`` clears a field).

    Unlike ``PUT``, fields left out keep their stored values. The same rule as ``PUT``
    decides who may change what.
    """
    _check_recipient(caller, recipient_id)
    fields = await read_json(request, state.settings.max_body)
    if not isinstance(fields, dict):
        raise InvalidInputError("body: expected a JSON object (the fields to change)")
    current = await state.directory.get_recipient(recipient_id)
    stored = current.model_dump(mode="json", exclude_none=True)
    merged = {**stored, **{k: v for k, v in fields.items() if k not in _SERVER_FIELDS}}
    return await _store(state, caller, recipient_id, current, _drop_nulls(merged), force=force)


_SERVER_FIELDS: Final = frozenset({"created"})
"""Recipient fields the hub sets itself: never taken from a request body."""


def _drop_nulls(fields: dict[str, Any]) -> dict[str, Any]:
    # a JSON merge patch's null removes the field, which then takes its default
    return {k: v for k, v in fields.items() if v is not None}


async def _current(
    state: ApiState, caller: Principal, recipient_id: str
) -> tuple[Recipient | None, bool]:
    """The stored recipient (``None`` when it cannot be read) and whether one is stored.

    Raises:
        UnreadableRecordError: to a partner, for a record it cannot read (what the hub set
            on it, owner and disabled channels, is unknown: a backbone or admin repairs it).
    """
    try:
        return await state.directory.get_recipient(recipient_id), True
    except NotFoundError:
        return None, False
    except UnreadableRecordError:
        if caller.role == "partner":
            raise
        return None, True


async def _store(
    state: ApiState,
    caller: Principal,
    recipient_id: str,
    current: Recipient | None,
    fields: dict[str, Any],
    *,
    existed: bool | None = None,
    force: bool = False,
) -> Response:
    """Validate ``fields`` as the recipient, authorise the change, store it.

    A change that removes a contact subscriptions deliver to is refused unless ``force``
    (``?force=true``), which stops those subscriptions too.
    """
    if fields.setdefault("id", recipient_id) != recipient_id:
        raise InvalidInputError(f"id: does not match the path ({recipient_id!r})")
    fields = {k: v for k, v in fields.items() if k not in _SERVER_FIELDS}
    try:
        recipient = Recipient.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInputError(describe(exc)) from None
    if caller.role == "partner":
        # A partner manages its own contacts, not who is told about them nor what the hub
        # disabled after a permanent failure: those keep their stored values.
        recipient = recipient.model_copy(
            update={
                "owner": current.owner if current else None,
                "disabled_channels": current.disabled_channels if current else (),
            }
        )
    subs = await state.directory.list_subscriptions(recipient=recipient_id)
    # an unreadable stored record (current None) still has the subscriptions that scope it
    subscribed = [s.pattern for s in subs] if current is not None or subs else None
    recipient_change(caller, recipient_id, subscribed, changed_fields(current, recipient)).enforce()
    orphaned = [s for s in subs if _no_contact(recipient, s.channel)]
    if orphaned and not force:
        listed = ", ".join(f"{s.pattern} via {s.channel}" for s in orphaned)
        raise InvalidInputError(
            f"this change removes the contact {len(orphaned)} subscription"
            f"{'s' if len(orphaned) != 1 else ''} of {recipient_id!r} deliver to ({listed}): "
            "keep the contact, or repeat with ?force=true to stop those subscriptions too"
        )
    for sub in orphaned:  # first, so no subscription is ever left without its contact
        await state.directory.unsubscribe(sub.id)
    await state.directory.put_recipient(recipient)
    stored = await state.directory.get_recipient(recipient_id)
    status = 200 if (current is not None if existed is None else existed) else 201
    return Response(stored.model_dump_json(), status, media_type="application/json")


def _no_contact(recipient: Recipient, channel: Channel) -> bool:
    try:
        recipient.target(channel)
    except InvalidInputError:
        return True
    return False


def changed_fields(current: Recipient | None, wanted: Recipient) -> frozenset[str]:
    """The fields of ``wanted`` that differ from ``current`` (all of them when new)."""
    names = frozenset(Recipient.model_fields) - _SERVER_FIELDS
    if current is None:
        return names
    return frozenset(n for n in names if getattr(current, n) != getattr(wanted, n))


@router.delete(
    "/v1/recipients/{recipient_id}",
    status_code=204,
    summary="Delete a recipient",
    responses={
        204: {"description": "deleted, with all their subscriptions"},
        **responses(401, 403, 404, 422, 429),
    },
)
async def delete_recipient(recipient_id: RecipientId, state: State, caller: Caller) -> Response:
    """Delete a recipient and all their subscriptions.

    A backbone token may do so only when every subscription of the recipient is on one
    of its initiatives; a partner cannot delete itself (it may drop its subscriptions).
    """
    _check_recipient(caller, recipient_id)
    with contextlib.suppress(UnreadableRecordError):  # it exists; deleting repairs it
        await state.directory.get_recipient(recipient_id)
    subs = await state.directory.list_subscriptions(recipient=recipient_id)
    recipient_deletion(caller, recipient_id, [s.pattern for s in subs]).enforce()
    await state.directory.delete_recipient(recipient_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------- subscriptions


@router.get(
    "/v1/subscriptions",
    response_model=list[Subscription],
    summary="List subscriptions",
    responses={200: _ok([_SUBSCRIPTION_EXAMPLE]), **responses(401, 403, 422, 429)},
)
async def list_subscriptions(
    state: State,
    caller: Caller,
    recipient: Annotated[Token | None, Query(description="only this recipient's")] = None,
) -> list[Subscription]:
    """The subscriptions the token may see, optionally of one recipient."""
    if caller.role == "system":
        raise caller.deny("list subscriptions")
    rows = await state.directory.list_subscriptions(recipient)
    return [s for s in rows if caller.may_see_subscription(s.recipient, s.pattern)]


@router.post(
    "/v1/subscriptions",
    status_code=201,
    response_model=Subscription,
    summary="Subscribe",
    responses={
        201: _ok(_SUBSCRIPTION_EXAMPLE, "subscribed (the same id if it existed)"),
        **responses(400, 401, 403, 404, 413, 415, 422, 429),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/SubscriptionIn"},
                    "example": {
                        "recipient": "maria",
                        "pattern": "impact.somerville.>",
                        "channel": "email",
                        "mode": "digest",
                    },
                }
            },
        }
    },
)
async def subscribe(request: Request, state: State, caller: Caller) -> Response:
    """Subscribe a recipient to a pattern on a channel (idempotent)."""
    fields = await read_json(request, state.settings.max_body)
    try:
        wanted = SubscriptionIn.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInputError(describe(exc)) from None
    validate_pattern(wanted.pattern)
    subscription_added(caller, wanted.recipient, wanted.pattern).enforce()
    sub = await state.directory.subscribe(
        wanted.recipient, wanted.pattern, wanted.channel, wanted.mode
    )
    return Response(sub.model_dump_json(), 201, media_type="application/json")


@router.delete(
    "/v1/subscriptions/{subscription_id}",
    status_code=204,
    summary="Unsubscribe",
    responses={
        204: {"description": "unsubscribed"},
        **responses(401, 403, 404, 409, 422, 429),
    },
)
async def unsubscribe(
    subscription_id: Annotated[str, Path(max_length=100, examples=["maria-3f2a9c1b7e4d"])],
    state: State,
    caller: Caller,
) -> Response:
    """Delete one subscription."""
    sub = await state.directory.get_subscription(subscription_id)
    subscription_removed(caller, sub.recipient, sub.pattern).enforce()
    await state.directory.unsubscribe(subscription_id)
    return Response(status_code=204)
