"""Names of every stream, KV bucket and durable consumer the hub declares."""

from __future__ import annotations

from typing import Final

EVENTS: Final = "EVENTS"
DELIVERIES: Final = "DELIVERIES"
DIGESTS: Final = "DIGESTS"
SCHEDULES: Final = "SCHEDULES"
DEAD: Final = "DEAD"
OUTBOX: Final = "OUTBOX"
DELIVERY_LOG: Final = "DELIVERY_LOG"

ROUTER_CONSUMER: Final = "router"
DIGEST_CONSUMER: Final = "digest"

KV_RECIPIENTS: Final = "recipients"
KV_SUBSCRIPTIONS: Final = "subscriptions"
KV_TOKENS: Final = "tokens"
KV_THREADS: Final = "threads"
KV_SENT: Final = "sent"
KV_DIGEST_STATE: Final = "digest_state"
KV_IDEMPOTENCY: Final = "idempotency"
KV_WEBHOOK_SECRETS: Final = "webhook_secrets"
