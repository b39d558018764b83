"""The webhook secrets' store: the ``webhook_secrets`` KV bucket (declared in the topology).

What is stored and how rotation works is :mod:`notifiers.webhook_secrets`;
:class:`KvSecretStore` keeps it in JetStream KV and is the
:class:`~notifiers.webhook.SecretStore` the hub hands the webhook notifier. The
recipient-level functions back ``impactbus webhook-secret show|rotate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from notifiers.base import TransientDeliveryError
from notifiers.settings import SecretStoreSettings
from notifiers.webhook_secrets import (
    SecretVersion,
    TargetSecrets,
    entry_key,
    now_utc,
)
from notifiers.webhook_signing import new_secret
from schemas.directory import Recipient
from schemas.errors import BusUnavailableError, InvalidInputError, NotFoundError
from services.bus.connection import Bus
from services.bus.names import KV_RECIPIENTS, KV_WEBHOOK_SECRETS

_CAS_TRIES: Final = 10


class KvSecretStore:
    """Per-target secrets in the ``webhook_secrets`` bucket (see the module docstring).

    Args:
        bus: the hub's bus, its topology declared.
        settings: grace period and cache time.
        shared: the shared fallback secrets (``IMPACTBUS_WEBHOOK_SECRET``), newest first.
        clock: the current time (tests).
    """

    def __init__(
        self,
        bus: Bus,
        settings: SecretStoreSettings,
        shared: list[str] | None = None,
        *,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._bus = bus
        self._shared = list(shared or [])
        self.settings = settings
        self._clock = clock
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def bucket(self) -> KeyValue:
        """The ``webhook_secrets`` bucket.

        Raises:
            BusUnavailableError: the bucket is missing (the topology was not declared).
        """
        try:
            return await self._bus.kv(KV_WEBHOOK_SECRETS)
        except nats.js.errors.BucketNotFoundError:
            raise BusUnavailableError(
                f"no {KV_WEBHOOK_SECRETS} bucket: start the hub once (impactbus up) to declare it"
            ) from None

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
        except (TimeoutError, nats.errors.Error, BusUnavailableError) as exc:
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


async def webhook_target_key(bus: Bus, recipient_id: str) -> str:
    """The key of a recipient's webhook target.

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: the recipient has no webhook URL.
    """
    kv = await bus.kv(KV_RECIPIENTS)
    try:
        entry = await kv.get(recipient_id)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
        raise NotFoundError(f"no recipient {recipient_id!r}") from None
    assert entry.value is not None
    return Recipient.model_validate_json(entry.value).target("webhook").key


async def show_secrets(
    bus: Bus, recipient_id: str, settings: SecretStoreSettings | None = None
) -> tuple[TargetSecrets, bool]:
    """A recipient's webhook secrets, creating the first one if there is none.

    Args:
        bus: the hub's bus.
        recipient_id: whose webhook.
        settings: grace period and cache time (default: from the environment).

    Returns:
        The entry, and whether it was created now.

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: the recipient has no webhook URL.
    """
    store = KvSecretStore(bus, settings or SecretStoreSettings())
    target = await webhook_target_key(bus, recipient_id)
    existing = await store.load(target)
    if existing is not None and existing.valid(now_utc()):
        return existing, False
    return await store.ensure(target), True


async def create_secret(bus: Bus, recipient_id: str) -> str:
    """The signing secret of a recipient's webhook, created if it has none yet.

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: the recipient has no webhook URL.
    """
    entry, _ = await show_secrets(bus, recipient_id)
    return entry.secrets[0].secret


async def rotate_secret(
    bus: Bus,
    recipient_id: str,
    grace: timedelta | None = None,
    settings: SecretStoreSettings | None = None,
) -> TargetSecrets:
    """Rotate a recipient's webhook secret: a new one signs, the old one stays valid.

    Args:
        bus: the hub's bus.
        recipient_id: whose webhook.
        grace: how long the old secret stays valid (default: the settings').
        settings: grace period and cache time (default: from the environment).

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: the recipient has no webhook URL, or ``grace`` is negative.
    """
    if grace is not None and grace < timedelta(0):
        raise InvalidInputError("the grace period cannot be negative")
    store = KvSecretStore(bus, settings or SecretStoreSettings())
    return await store.rotate(await webhook_target_key(bus, recipient_id), grace)
