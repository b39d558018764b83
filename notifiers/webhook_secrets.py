"""Per-target webhook signing secrets, with rotation: what is stored, not where.

Each webhook target has one :class:`TargetSecrets` (stored under :func:`entry_key`, a
hash of the target key, so any URL makes a valid key): the target's ``whsec_`` secrets,
newest first. The newest signs; an older one stays *listed*, and so is also sent as a
second ``webhook-signature``, until its ``expires_at``: a receiver that still has the
old secret keeps verifying during the grace period of a rotation.

The hub keeps them in the ``webhook_secrets`` KV bucket
(``services.bus.webhook_secrets.KvSecretStore``, the
:class:`~notifiers.webhook.SecretStore` the hub hands the webhook notifier). For a
target it returns:

1. its own unexpired secrets from the bucket, then the shared secrets of
   ``IMPACTBUS_WEBHOOK_SECRET`` (a migration aid: receivers verify with either);
2. with no entry in the bucket but a shared secret configured, the shared secret only;
3. with neither, a new secret, created for the target there and then (so webhooks are
   signed from the first one; ``impactbus webhook-secret show <recipient>`` prints it
   for the receiver).

Creating and rotating are compare-and-set updates: two processes creating the first
secret of a target at once end up with one. The secrets are stored in clear (an HMAC
needs the key): restrict ``$KV.webhook_secrets.>`` to the webhook workers and admins
with NATS permissions.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict

from notifiers.webhook_signing import new_secret


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


def now_utc() -> datetime:
    """The current time, aware (the default clock of a secret store)."""
    return datetime.now(UTC)
