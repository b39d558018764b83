"""Per-target webhook signing secrets in JetStream KV, with rotation.

The bucket ``webhook_secrets`` holds one entry per webhook target (key: a hash of the
target key, so any URL makes a valid key), a :class:`TargetSecrets`: the target's
``whsec_`` secrets, newest first. The newest signs; an older one stays *listed*, and so
is also sent as a second ``webhook-signature``, until its ``expires_at``: a receiver
that still has the old secret keeps verifying during the grace period of a rotation.

:class:`KvSecretStore` is the :class:`~notifiers.webhook.SecretStore` the webhook
notifier uses by default. For a target it returns:

1. its own unexpired secrets from the bucket, then the shared secrets of
   ``IMPACTBUS_WEBHOOK_SECRET`` (a migration aid: receivers verify with either);
2. with no entry in the bucket but a shared secret configured, the shared secret only;
3. with neither, a new secret, created for the target there and then (so webhooks are
   signed from the first one; ``impactbus webhook-secret show <recipient>`` prints it
   for the receiver).

Creating and rotating are compare-and-set updates: two processes creating the first
secret of a target at once end up with one. The bucket is created on first use. The
secrets are stored in clear (an HMAC needs the key): restrict ``$KV.webhook_secrets.>``
to the webhook workers and admins with NATS permissions.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from notifiers.base import TransientDeliveryError
from notifiers.webhook import WebhookSettings, new_secret
from schemas.directory import Recipient
from schemas.errors import BusUnavailableError, InvalidInputError, NotFoundError

BUCKET: Final = "webhook_secrets"
# services.bus.KV_RECIPIENTS: notifiers do not import services
RECIPIENTS_BUCKET: Final = "recipients"
_CAS_TRIES: Final = 10


class SecretStoreSettings(BaseSettings):
    """Rotation and storage of per-target secrets (``IMPACTBUS_WEBHOOK_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="IMPACTBUS_WEBHOOK_", env_file=".env", extra="ignore"
    )

    rotation_grace_h: float = Field(
        24.0, ge=0, description="hours an old secret stays valid after a rotation"
    )
    cache_s: float = Field(5.0, ge=0, description="how long a worker reuses what it read")
    replicas: int = Field(1, ge=1, le=5, validation_alias="IMPACTBUS_STREAM_REPLICAS")


class SecretVersion(BaseModel):
    """One secret of a target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: str
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None

    def valid_at(self, now: datetime) -> bool:
        """Whether this secret still signs or verifies at ``now``."""
        return self.expires_at is None or now < self.expires_at


class TargetSecrets(BaseModel):
    """The value of a target's entry: its secrets, newest (the signing one) first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    secrets: tuple[SecretVersion, ...]

    def valid(self, now: datetime) -> list[str]:
        """The secrets that are valid at ``now``, newest first."""
        return [s.secret for s in self.secrets if s.valid_at(now)]

    def rotated(self, now: datetime, grace: timedelta) -> TargetSecrets:
        """A new signing secret; older ones expire after ``grace`` (expired ones go)."""
        ends = now + grace
        older = tuple(
            s.model_copy(
                update={"expires_at": ends if s.expires_at is None else min(s.expires_at, ends)}
            )
            for s in self.secrets
            if s.valid_at(now)
        )
        fresh = SecretVersion(secret=new_secret(), created_at=now)
        return TargetSecrets(target=self.target, secrets=(fresh, *older))


def entry_key(target_key: str) -> str:
    """The bucket key of a target (a hash: URLs hold characters keys may not)."""
    return hashlib.sha256(target_key.encode()).hexdigest()[:40]


def _now() -> datetime:
    return datetime.now(UTC)


class KvSecretStore:
    """Per-target secrets in the ``webhook_secrets`` bucket (see the module docstring).

    Args:
        js: a JetStream context; the bucket is opened, or created, on first use.
        webhook: the shared fallback secrets (``IMPACTBUS_WEBHOOK_SECRET``).
        settings: grace period, cache time and replicas.
        clock: the current time (tests).
    """

    def __init__(
        self,
        js: JetStreamContext,
        webhook: WebhookSettings | None = None,
        settings: SecretStoreSettings | None = None,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._js = js
        self._shared = (webhook or WebhookSettings()).secrets
        self.settings = settings or SecretStoreSettings()
        self._clock = clock
        self._kv: KeyValue | None = None
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def bucket(self) -> KeyValue:
        """The bucket, created if it does not exist yet."""
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self._js.create_key_value(
                    bucket=BUCKET,
                    history=5,
                    replicas=self.settings.replicas,
                    description="per-target webhook signing secrets",
                )
        return self._kv

    async def get(self, target_key: str) -> list[str]:
        """The secrets to sign a webhook to ``target_key`` with, newest first.

        Raises:
            TransientDeliveryError: the bucket cannot be read now (never send unsigned).
        """
        cached = self._cache.get(target_key)
        if cached is not None and cached[0] > time.monotonic():
            return list(cached[1])
        try:
            found = await self.load(target_key)
            if found is None and not self._shared:
                found = await self.ensure(target_key)
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransientDeliveryError(f"webhook secrets unavailable: {exc}") from None
        own = found.valid(self._clock()) if found else []
        secrets = own + [s for s in self._shared if s not in own]
        self._cache[target_key] = (time.monotonic() + self.settings.cache_s, secrets)
        return list(secrets)

    async def load(self, target_key: str) -> TargetSecrets | None:
        """The target's entry, or ``None`` if it has none."""
        found = await self._load(target_key)
        return found[0] if found else None

    async def _load(self, target_key: str) -> tuple[TargetSecrets, int] | None:
        kv = await self.bucket()
        try:
            entry = await kv.get(entry_key(target_key))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if not entry.value:
            return None
        return TargetSecrets.model_validate_json(entry.value), int(entry.revision or 0)

    async def ensure(self, target_key: str) -> TargetSecrets:
        """The target's entry, created with a first secret if it has none."""
        kv = await self.bucket()
        for _ in range(_CAS_TRIES):
            found = await self._load(target_key)
            if found is not None and found[0].valid(self._clock()):
                return found[0]
            fresh = TargetSecrets(
                target=target_key,
                secrets=(SecretVersion(secret=new_secret(), created_at=self._clock()),),
            )
            value = fresh.model_dump_json().encode()
            try:
                if found is None:
                    await kv.create(entry_key(target_key), value)
                else:  # every secret expired: start again
                    await kv.update(entry_key(target_key), value, last=found[1])
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone else created it first: read theirs
            self._cache.pop(target_key, None)
            return fresh
        raise BusUnavailableError(f"could not store a secret for {target_key}: too much contention")

    async def rotate(self, target_key: str, grace: timedelta | None = None) -> TargetSecrets:
        """Give the target a new signing secret; the old stays valid for ``grace``.

        Args:
            target_key: the webhook target's key.
            grace: how long the old secret stays valid (default: the settings').
        """
        if grace is None:
            grace = timedelta(hours=self.settings.rotation_grace_h)
        kv = await self.bucket()
        for _ in range(_CAS_TRIES):
            found = await self._load(target_key)
            current = found[0] if found else TargetSecrets(target=target_key, secrets=())
            rotated = current.rotated(self._clock(), grace)
            value = rotated.model_dump_json().encode()
            try:
                if found is None:
                    await kv.create(entry_key(target_key), value)
                else:
                    await kv.update(entry_key(target_key), value, last=found[1])
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            self._cache.pop(target_key, None)
            return rotated
        raise BusUnavailableError(f"could not rotate the secret of {target_key}: contention")


# --------------------------------------------------------------------------- by recipient


class HubBus(Protocol):
    """What the recipient-level functions need of ``services.bus.Bus``."""

    js: JetStreamContext

    async def kv(self, bucket: str) -> KeyValue:
        """A declared KV bucket."""
        ...


async def webhook_target_key(bus: HubBus, recipient_id: str) -> str:
    """The key of a recipient's webhook target.

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: the recipient has no webhook URL.
    """
    kv = await bus.kv(RECIPIENTS_BUCKET)
    try:
        entry = await kv.get(recipient_id)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
        raise NotFoundError(f"no recipient {recipient_id!r}") from None
    assert entry.value is not None
    return Recipient.model_validate_json(entry.value).target("webhook").key


async def show_secrets(bus: HubBus, recipient_id: str) -> tuple[TargetSecrets, bool]:
    """A recipient's webhook secrets, creating the first one if there is none.

    Returns:
        The entry, and whether it was created now.

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: the recipient has no webhook URL.
    """
    store = KvSecretStore(bus.js)
    target = await webhook_target_key(bus, recipient_id)
    existing = await store.load(target)
    if existing is not None and existing.valid(_now()):
        return existing, False
    return await store.ensure(target), True


async def create_secret(bus: HubBus, recipient_id: str) -> str:
    """The signing secret of a recipient's webhook, created if it has none yet.

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: the recipient has no webhook URL.
    """
    entry, _ = await show_secrets(bus, recipient_id)
    return entry.secrets[0].secret


async def rotate_secret(
    bus: HubBus, recipient_id: str, grace: timedelta | None = None
) -> TargetSecrets:
    """Rotate a recipient's webhook secret: a new one signs, the old one stays valid.

    Args:
        bus: the hub's bus.
        recipient_id: whose webhook.
        grace: how long the old secret stays valid (default ``IMPACTBUS_WEBHOOK_ROTATION_GRACE_H``).

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: the recipient has no webhook URL, or ``grace`` is negative.
    """
    if grace is not None and grace < timedelta(0):
        raise InvalidInputError("the grace period cannot be negative")
    store = KvSecretStore(bus.js)
    return await store.rotate(await webhook_target_key(bus, recipient_id), grace)
