"""API tokens: created once, stored hashed in KV ``tokens``, checked in constant time.

A token reads ``ib_<id>_<secret>``: the id (16 hex digits) is the KV key, so a request's
token is found without scanning; only the SHA-256 of the secret is stored, so the bucket
leaks nothing usable. The full token is shown once, when it is created.

Roles (what a token may do):

========  ==============================================================================
admin     everything, in every initiative
backbone  publish any kind; add and remove subscriptions on its initiatives; change or
          delete a recipient only when everything it follows is on its initiatives
          (:mod:`services.directory.access`); read its initiatives' events
system    publish metric updates to its initiatives, nothing else
partner   manage its own recipient (and that recipient's subscriptions to its
          initiatives); read its initiatives' events
========  ==============================================================================

Revocation sets ``revoked`` on the record (kept for audit). API processes keep a
:class:`~services.bus.watch.KvMirror` of the bucket, so a revocation made anywhere (``impactbus
tokens revoke``) is refused by every process within milliseconds.

Errors (both :class:`~schemas.errors.ImpactbusError`)::

    AuthenticationError     no token, a malformed, unknown or revoked one   (HTTP 401)
    PermissionDeniedError   a valid token whose role or initiatives forbid it (HTTP 403)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import ImpactbusError, InvalidInputError, NotFoundError
from schemas.events import describe
from schemas.subjects import EVENTS_ROOT, EventKind, validate_pattern
from schemas.text import Line, Token
from services.bus import KV_TOKENS, Bus
from services.bus.kv import Kv, open_kv
from services.bus.watch import KvMirror, snapshot
from services.directory.ratelimit import RateLimiter

Role = Literal["admin", "backbone", "system", "partner"]
ROLES: Final[tuple[Role, ...]] = ("admin", "backbone", "system", "partner")
PREFIX: Final = "ib"
_ID_RE: Final = r"^[0-9a-f]{16}$"
_DUMMY_HASH: Final = hashlib.sha256(b"no such token").hexdigest()


class AuthenticationError(ImpactbusError):
    """The request carries no token, or one that is malformed, unknown or revoked."""


class PermissionDeniedError(ImpactbusError, PermissionError):
    """The token is valid but its role or initiatives do not allow the request."""


class TokenRecord(BaseModel):
    """What the ``tokens`` bucket holds under a token's id (never the secret)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=_ID_RE)]
    hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the secret")]
    role: Role
    initiatives: tuple[Token, ...] = Field((), max_length=200)
    recipient: Token | None = None
    label: Line | None = None
    created_at: AwareDatetime
    revoked: bool = False
    revoked_at: AwareDatetime | None = None


def hash_secret(secret: str) -> str:
    """The stored form of a secret: SHA-256, hex (secrets are 256 random bits: no KDF)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    """``ib_<id>_<secret>`` -> ``(id, secret)``.

    Raises:
        AuthenticationError: not of that form.
    """
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != PREFIX or len(token_id) != 16 or not secret or len(secret) > 128:
        raise AuthenticationError("malformed token: expected ib_<id>_<secret>")
    if any(c not in "0123456789abcdef" for c in token_id):
        raise AuthenticationError("malformed token: expected ib_<id>_<secret>")
    return token_id, secret


# ----------------------------------------------------------------------------- principal


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: an authenticated, unrevoked token."""

    token_id: str
    role: Role
    initiatives: frozenset[str]
    recipient: str | None = None

    @classmethod
    def of(cls, record: TokenRecord) -> Principal:
        """The principal a token record authenticates."""
        return cls(record.id, record.role, frozenset(record.initiatives), record.recipient)

    @property
    def source(self) -> str:
        """CloudEvents ``source`` given to short-form events posted with this token."""
        return f"urn:impactbus:token:{self.token_id}"

    def in_scope(self, initiative: str) -> bool:
        """Whether ``initiative`` is one of the token's (admin: every one)."""
        return self.role == "admin" or initiative in self.initiatives

    def may_publish(self, kind: EventKind, initiative: str) -> bool:
        """Whether the token may publish an event of ``kind`` to ``initiative``."""
        if self.role == "admin":
            return True
        if self.role == "backbone" or (self.role == "system" and kind == "metric"):
            return initiative in self.initiatives
        return False

    def may_read(self, initiative: str) -> bool:
        """Whether the token may read ``initiative``'s events."""
        return self.role != "system" and self.in_scope(initiative)

    def may_manage_recipient(self, recipient_id: str) -> bool:
        """Whether the token may see and change the recipient ``recipient_id``.

        Recipients are people and channels of the whole partnership, not of one
        initiative: backbone tokens see them all (what they may change of them is
        :func:`services.directory.access.recipient_change`'s decision); partners only their own.
        """
        if self.role in ("admin", "backbone"):
            return True
        return self.role == "partner" and recipient_id == self.recipient

    def may_subscribe(self, recipient_id: str, pattern: str) -> bool:
        """Whether the token may subscribe ``recipient_id`` to ``pattern``.

        A pattern belongs to the initiative of its second token; a wildcard there spans
        every initiative, which only an admin may subscribe anyone to.

        Raises:
            InvalidSubjectError: ``pattern`` is malformed.
        """
        if self.role == "admin":
            return True
        if self.role == "system" or not self.may_manage_recipient(recipient_id):
            return False
        return _pattern_initiative(pattern) in self.initiatives

    def may_see_subscription(self, recipient_id: str, pattern: str) -> bool:
        """Whether the token may see or delete a subscription.

        Partners see and may drop every subscription of their own recipient (leaving is
        always allowed); backbone tokens those on their initiatives.
        """
        if self.role in ("admin", "partner"):
            return self.role == "admin" or recipient_id == self.recipient
        if self.role == "system":
            return False
        return _pattern_initiative(pattern) in self.initiatives

    def deny(self, what: str) -> PermissionDeniedError:
        """The error that says this token may not do ``what``."""
        return PermissionDeniedError(f"token {self.token_id} ({self.role}) may not {what}")


def _pattern_initiative(pattern: str) -> str:
    """The initiative token of a subscription pattern (``*`` or ``>`` when it spans all)."""
    parts = validate_pattern(pattern).split(".")
    return parts[1] if parts[0] == EVENTS_ROOT else "*"


# ------------------------------------------------------------------------------ storage


async def create_token(
    bus: Bus,
    role: str,
    initiatives: list[str] | tuple[str, ...],
    recipient: str | None = None,
    label: str | None = None,
) -> tuple[str, str]:
    """Create a token; return ``(token_id, token)``, the full token shown only now.

    Args:
        bus: the connected hub.
        role: ``admin``, ``backbone``, ``system`` or ``partner``.
        initiatives: the initiatives it acts on (ignored for admin; required otherwise).
        recipient: the partner's own recipient id (required for partner).
        label: a note for humans, e.g. ``"CRM sync"``.

    Raises:
        InvalidInputError: an unknown role, a missing initiative or recipient, a bad token.
    """
    if role not in ROLES:
        raise InvalidInputError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if role != "admin" and not initiatives:
        raise InvalidInputError(f"a {role} token needs at least one initiative")
    if role == "partner" and not recipient:
        raise InvalidInputError("a partner token needs its recipient id")
    if role != "partner" and recipient:
        raise InvalidInputError("only a partner token has a recipient")
    secret = secrets.token_urlsafe(32)
    token_id = secrets.token_hex(8)
    try:
        record = TokenRecord(
            id=token_id,
            hash=hash_secret(secret),
            role=role,
            initiatives=tuple(sorted(set(initiatives))) if role != "admin" else (),
            recipient=recipient,
            label=label,
            created_at=datetime.now(UTC),
        )
    except ValidationError as exc:
        raise InvalidInputError(describe(exc)) from None
    kv = await open_kv(bus, KV_TOKENS)
    await kv.create(token_id, record.model_dump_json().encode())
    return token_id, f"{PREFIX}_{token_id}_{secret}"


async def list_tokens(bus: Bus) -> list[TokenRecord]:
    """Every token record (revoked ones included), oldest first."""
    values = await snapshot(await open_kv(bus, KV_TOKENS))
    records = [TokenRecord.model_validate_json(v) for v in values.values()]
    return sorted(records, key=lambda r: r.created_at)


async def revoke_token(bus: Bus, token_id: str) -> TokenRecord:
    """Revoke a token everywhere (the record stays, marked revoked).

    Raises:
        NotFoundError: no such token.
    """
    if not re.fullmatch(_ID_RE, token_id):
        raise NotFoundError(f"no token {token_id!r} (ids are 16 hex digits)")
    kv = await open_kv(bus, KV_TOKENS)
    try:
        entry = await kv.get(token_id)
    except NotFoundError:
        raise NotFoundError(f"no token {token_id!r}") from None
    assert entry.value is not None
    record = TokenRecord.model_validate_json(entry.value)
    if not record.revoked:
        record = record.model_copy(update={"revoked": True, "revoked_at": datetime.now(UTC)})
        await kv.put(token_id, record.model_dump_json().encode())
    return record


# ------------------------------------------------------------------------ authenticator


class Authenticator:
    """Checks bearer tokens against an in-memory mirror of the ``tokens`` bucket.

    A token the mirror does not know yet (created a moment ago in another process: the
    watch delivers it within milliseconds) is looked up in the bucket directly, at most
    ``lookups_per_s`` times a second, so a flood of made-up tokens cannot turn into a
    flood of KV requests.
    """

    def __init__(self, mirror: KvMirror[TokenRecord], kv: Kv, lookups_per_s: float = 20) -> None:
        self._mirror = mirror
        self._kv = kv
        self._lookups = RateLimiter(lookups_per_s, lookups_per_s)

    @classmethod
    async def open(cls, bus: Bus) -> Authenticator:
        """An authenticator following ``bus``'s ``tokens`` bucket (call :meth:`start`)."""
        kv = await open_kv(bus, KV_TOKENS)
        return cls(KvMirror(kv, TokenRecord.model_validate_json), kv)

    async def start(self) -> None:
        """Load every token, then follow changes."""
        await self._mirror.start()

    async def stop(self) -> None:
        """Stop following changes."""
        await self._mirror.stop()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer ib_...`` header value (mirror only).

        Raises:
            AuthenticationError: missing, malformed, unknown or revoked.
        """
        token_id, secret = _bearer(authorization)
        return _check(self._mirror.get(token_id), secret)

    async def verify(self, authorization: str | None) -> Principal:
        """Like :meth:`authenticate`, and finds a token the mirror has not received yet.

        Raises:
            AuthenticationError: missing, malformed, unknown or revoked.
        """
        token_id, secret = _bearer(authorization)
        record = self._mirror.get(token_id)
        if record is None and self._lookups.wait_time("miss") == 0:
            record = await self._lookup(token_id)
        return _check(record, secret)

    async def _lookup(self, token_id: str) -> TokenRecord | None:
        try:
            entry = await self._kv.get(token_id)
        except ImpactbusError:
            return None  # not found, deleted, or NATS unreachable: unknown either way
        try:
            return TokenRecord.model_validate_json(entry.value or b"")
        except ValueError:
            return None


def _bearer(authorization: str | None) -> tuple[str, str]:
    if not authorization:
        raise AuthenticationError("missing bearer token (Authorization: Bearer ib_...)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("use Authorization: Bearer ib_...")
    return split_token(token.strip())


def _check(record: TokenRecord | None, secret: str) -> Principal:
    # compare even for an unknown id, so timing does not tell which ids exist
    expected = record.hash if record is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected, hash_secret(secret))
    if record is None or not matches:
        raise AuthenticationError("unknown token")
    if record.revoked:
        raise AuthenticationError("revoked token")
    return Principal.of(record)
