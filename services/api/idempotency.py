"""``Idempotency-Key``: one key, one request body, across every API process.

The key makes a retried POST the same event (JetStream deduplicates on the event id it
becomes), but JetStream cannot tell a retry from a different request that reuses the key:
both would answer ``202 duplicate`` with the first event. So the first request with a key
claims it in the ``idempotency`` KV bucket with a hash of its body, and a later request
with the same key and another body is refused (409). The bucket is shared by every API
process on the bus and forgets a claim after the EVENTS stream's duplicate window (plus
the publish timeout: a claim is made just before its publish), the span in which the key
still means "the same event".

A key is scoped by route and token: the same key on another route or from another token
names another event.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final, Literal

from schemas.errors import ConflictError, ImpactbusError, NotFoundError
from services.bus.kv import Kv

Route = Literal["event", "batch"]
_ATTEMPTS: Final = 3


class IdempotencyKeyReusedError(ImpactbusError):
    """The key was already used, within the duplicate window, for another request body."""


def fingerprint(body: object) -> bytes:
    """A hash of a parsed JSON body that ignores key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest().encode()


def claim_id(route: Route, source: str, key: str) -> str:
    """The KV key of one route's, one token's ``Idempotency-Key`` (any printable ASCII)."""
    return hashlib.sha256(f"{route}\x00{source}\x00{key}".encode()).hexdigest()


async def claim(kv: Kv, route: Route, source: str, key: str, body: object) -> None:
    """Claim ``key`` for ``body``, or confirm that it was claimed for the same body.

    Atomic across processes: the first ``create`` wins; the others compare hashes.

    Raises:
        IdempotencyKeyReusedError: ``key`` was claimed for another body.
    """
    kv_key, mine = claim_id(route, source, key), fingerprint(body)
    for _ in range(_ATTEMPTS):
        try:
            await kv.create(kv_key, mine)
        except ConflictError:
            pass  # claimed before: by a retry, or by another request
        else:
            return
        try:
            entry = await kv.get(kv_key)
        except NotFoundError:
            continue  # expired (or deleted) between the two calls: claim it again
        if entry.value == mine:
            return
        raise IdempotencyKeyReusedError(
            f"Idempotency-Key {key!r} was already used for other content: send a new key "
            "for a new request, or the same body to retry"
        )
    raise IdempotencyKeyReusedError(f"Idempotency-Key {key!r} is being claimed: retry")
