"""Signed personal links: the preference centre and one-click unsubscribe (RFC 8058).

Every delivery carries two links that need no login: ``/preferences/<token>`` (bound to
one recipient) and ``/unsubscribe/<token>`` (bound to one recipient and one subscription,
or, in a digest, to the recipient's digest subscriptions on that channel). The token *is*
the authorisation, so it is signed with :class:`itsdangerous.URLSafeTimedSerializer`
(HMAC-SHA1 over the payload and its timestamp) and expires after
``IMPACTBUS_LINK_MAX_AGE_DAYS`` (default 60: more than the 30 days CAN-SPAM asks an
unsubscribe link to keep working). Each kind of link has its own salt, so a preferences
token is never accepted as an unsubscribe token or as a session cookie.

The key is ``IMPACTBUS_SECRET_KEY`` or, when unset, a random key generated once into
``<data dir>/secret_key`` (mode 0600). Every process that makes or checks links must use
the same key: set ``IMPACTBUS_SECRET_KEY`` when the services run on several machines.

Errors (all :class:`LinkError`, an :class:`~schemas.errors.ImpactbusError`)::

    LinkError
    ├── ForgedLinkError        not signed by this hub, or not a token at all   (HTTP 400)
    ├── ExpiredLinkError       signed, but older than the maximum age           (HTTP 410)
    ├── WrongRecipientError    signed, but for another recipient's data         (HTTP 403)
    ├── RecipientGoneError     signed, but the recipient was deleted since      (HTTP 410)
    └── OutdatedLinkError      signed for a subscription or recipient that was  (HTTP 410)
                               removed since (the one there now is newer)

Versions: a link carries the version (:func:`schemas.directory.version_of`, the creation
time) of the subscription or recipient it was made for (``"v"`` in the payload). When the
stored one has another version, it was removed and created again since, and the link is
refused. Links made before links carried versions have none and work until they expire.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from notifiers.base import LinkMaker, Links
from schemas.delivery import Delivery
from schemas.errors import ImpactbusError
from services.config import HubSettings

Purpose = Literal["preferences", "unsubscribe", "session"]
KEY_FILE: Final = "secret_key"
DAY_S: Final = 86_400


class LinkError(ImpactbusError):
    """A personal link that cannot be honoured. ``status`` is the HTTP status to answer."""

    status: int = 400


class ForgedLinkError(LinkError):
    """Not a token this hub signed (tampered, truncated, or signed with another key)."""

    status = 400


class ExpiredLinkError(LinkError):
    """A genuine token past its maximum age."""

    status = 410


class WrongRecipientError(LinkError):
    """A genuine token used on another recipient's subscription or form."""

    status = 403


class RecipientGoneError(LinkError):
    """A genuine token of a recipient who no longer exists."""

    status = 410


class OutdatedLinkError(LinkError):
    """A genuine token of a subscription or recipient that was removed and made anew since."""

    status = 410


def check_version(claimed: str | None, current: str | None, what: str) -> None:
    """Refuse a link made for an earlier subscription or recipient of the same id.

    Args:
        claimed: the version the link carries (``None``: an unversioned, older link).
        current: the stored record's version.
        what: ``"subscription"`` or ``"recipient"``, for the message.

    Raises:
        OutdatedLinkError: the versions differ.
    """
    if claimed is not None and claimed != current:
        if what == "subscription":
            raise OutdatedLinkError(
                "this link was for a subscription that has since been removed: the one "
                "there now was made later, and only the links in its own messages change "
                "it. Nothing was changed."
            )
        raise OutdatedLinkError(
            "this link was for a recipient who has since been removed: the preferences "
            "there now belong to a later one. Nothing was changed."
        )


class LinkSettings(BaseSettings):
    """``IMPACTBUS_SECRET_KEY`` and ``IMPACTBUS_LINK_MAX_AGE_DAYS``."""

    model_config = SettingsConfigDict(env_prefix="IMPACTBUS_", env_file=".env", extra="ignore")

    secret_key: SecretStr | None = Field(
        None, repr=False, description="unset: generated into <data dir>/secret_key"
    )
    link_max_age_days: float = Field(60, gt=0, le=3650)


def load_secret_key(data_dir: Path) -> str:
    """The key in ``<data_dir>/secret_key``, generated (mode 0600) on first use.

    Creation is atomic: the key is written to a private temporary file and hard-linked
    into place, so two processes starting together agree on one key.

    Raises:
        ImpactbusError: the file exists but is empty or unreadable.
    """
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ImpactbusError(f"cannot read the secret key {path}: {exc.strerror}") from None
    if not key:
        raise ImpactbusError(f"the secret key file {path} is empty: delete it to make a new one")
    return key


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    """What an unsubscribe token names: one subscription, or a channel's digest ones."""

    recipient: str
    subscription: str | None
    digest_channel: str | None = None
    version: str | None = None
    """The subscription's version, or the recipient's for a digest link (``None``: old)."""


class LinkSigner:
    """Signs and checks the hub's personal tokens with one key."""

    def __init__(self, key: str, max_age_days: float = 60) -> None:
        self._serializers = {
            purpose: URLSafeTimedSerializer(key, salt=f"impactbus.{purpose}")
            for purpose in ("preferences", "unsubscribe", "session")
        }
        self.max_age_s = int(max_age_days * DAY_S)

    @classmethod
    def from_settings(cls, hub: HubSettings, settings: LinkSettings | None = None) -> LinkSigner:
        """The signer of the hub whose files are in ``hub.data_dir``."""
        settings = settings or LinkSettings()
        key = (
            settings.secret_key.get_secret_value()
            if settings.secret_key
            else load_secret_key(hub.data_dir)
        )
        return cls(key, settings.link_max_age_days)

    # ----------------------------------------------------------------- signing

    def sign(self, purpose: Purpose, payload: dict[str, str]) -> str:
        """A URL-safe token carrying ``payload`` for ``purpose``."""
        return str(self._serializers[purpose].dumps(payload))

    def check(self, purpose: Purpose, token: str, max_age_s: int | None = None) -> dict[str, str]:
        """The payload of a token signed for ``purpose``.

        Raises:
            ExpiredLinkError: older than ``max_age_s`` (default: the link maximum age).
            ForgedLinkError: anything else that is not a genuine token.
        """
        age = self.max_age_s if max_age_s is None else max_age_s
        try:
            payload = self._serializers[purpose].loads(token, max_age=age)
        except SignatureExpired:
            raise ExpiredLinkError(
                "this link has expired: use the link in a newer message"
            ) from None
        except BadSignature:
            raise ForgedLinkError("this link is not valid: it was changed or cut short") from None
        if not isinstance(payload, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in payload.items()
        ):
            raise ForgedLinkError("this link is not valid")
        return payload

    # --------------------------------------------------------------- link kinds

    def preferences_token(self, recipient: str, version: str | None = None) -> str:
        """The token of ``recipient``'s preference centre (of that recipient version)."""
        payload = {"r": recipient}
        if version is not None:
            payload["v"] = version
        return self.sign("preferences", payload)

    def unsubscribe_token(
        self,
        recipient: str,
        subscription: str | None,
        *,
        digest_channel: str | None = None,
        version: str | None = None,
    ) -> str:
        """The token that removes one subscription (or a channel's digest subscriptions).

        ``version`` is the subscription's, or for a digest link the recipient's.
        """
        payload = {"r": recipient}
        if subscription:
            payload["s"] = subscription
        elif digest_channel:
            payload["d"] = digest_channel
        else:
            raise ValueError("an unsubscribe token needs a subscription or a digest channel")
        if version is not None:
            payload["v"] = version
        return self.sign("unsubscribe", payload)

    def read_preferences(self, token: str) -> str:
        """The recipient id a preferences token is bound to.

        Raises:
            ExpiredLinkError: the link is too old.
            ForgedLinkError: not a genuine preferences token.
        """
        return self.preferences_claim(token)[0]

    def preferences_claim(self, token: str) -> tuple[str, str | None]:
        """The recipient id a preferences token is bound to, and its version (or ``None``).

        Raises:
            ExpiredLinkError: the link is too old.
            ForgedLinkError: not a genuine preferences token.
        """
        payload = self.check("preferences", token)
        if set(payload) - {"v"} != {"r"}:
            raise ForgedLinkError("this link is not a preferences link")
        return payload["r"], payload.get("v")

    def read_unsubscribe(self, token: str) -> UnsubscribeClaim:
        """What an unsubscribe token is bound to.

        Raises:
            ExpiredLinkError: the link is too old.
            ForgedLinkError: not a genuine unsubscribe token.
        """
        payload = self.check("unsubscribe", token)
        keys = set(payload) - {"v"}
        if "r" not in keys or len(keys) != 2 or not ({"s", "d"} & keys):
            raise ForgedLinkError("this link is not an unsubscribe link")
        return UnsubscribeClaim(payload["r"], payload.get("s"), payload.get("d"), payload.get("v"))


def check_owner(recipient: str, owner: str) -> None:
    """Refuse a genuine token used on data of another recipient.

    Raises:
        WrongRecipientError: ``owner`` is not ``recipient``.
    """
    if recipient != owner:
        raise WrongRecipientError("this link belongs to someone else: nothing was changed")


_LinkKey = tuple[str, str | None, str | None, str, str | None, str | None]

LINK_REFRESH_S: Final = 3600
"""How long one recipient's signed links are reused before they are signed anew."""
LINK_CACHE_SIZE: Final = 100_000


class SignedLinks:
    """The :class:`~notifiers.base.LinkMaker` of a hub with a web face at ``base_url``.

    Signing costs about 30 µs a token and a message needs two, while the links of one
    (recipient, subscription) are the same in every message: they are signed once and
    reused for ``refresh_s`` seconds. A reused link carries its signing time, so it
    expires at most ``refresh_s`` before the configured maximum age (60 days).
    """

    def __init__(
        self, signer: LinkSigner, base_url: str, *, refresh_s: float = LINK_REFRESH_S
    ) -> None:
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.refresh_s = refresh_s
        self._cache: dict[_LinkKey, tuple[float, Links]] = {}

    def __call__(self, delivery: Delivery) -> Links:
        """The personal links of one delivery."""
        digest_channel = delivery.target.channel if delivery.digest_period else None
        # the versions are part of the key: a subscription made anew gets new links
        key = (
            delivery.recipient,
            delivery.subscription,
            digest_channel,
            delivery.event.initiative,
            delivery.subscription_version,
            delivery.recipient_version,
        )
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        links = self._sign(key)
        if len(self._cache) >= LINK_CACHE_SIZE:
            self._cache.clear()  # rare (that many recipients in an hour): start over
        self._cache[key] = (now, links)
        return links

    def _sign(self, key: _LinkKey) -> Links:
        recipient, subscription, digest_channel, initiative, sub_version, recipient_version = key
        signer = self.signer
        if subscription:
            unsubscribe = signer.unsubscribe_token(recipient, subscription, version=sub_version)
        elif digest_channel:
            unsubscribe = signer.unsubscribe_token(
                recipient, None, digest_channel=digest_channel, version=recipient_version
            )
        else:
            unsubscribe = None
        preferences = signer.preferences_token(recipient, recipient_version)
        return Links(
            preferences=f"{self.base_url}/preferences/{preferences}",
            unsubscribe=f"{self.base_url}/unsubscribe/{unsubscribe}" if unsubscribe else None,
            event=f"{self.base_url}/initiatives/{initiative}",
        )


def link_maker(hub: HubSettings) -> LinkMaker:
    """The link maker the hub gives its notifiers (see :func:`services.runtime.hub._links`)."""
    return SignedLinks(LinkSigner.from_settings(hub), hub.base_url)
