"""What a consumer does with a message whose handling raised: retry it later, or dead-letter it.

Every consumer loop (:mod:`services.bus.consumer`) settles a failed message through
:class:`Failures`, so no message can loop:

* **transient** (:func:`is_transient`: NATS timeouts, a lost or reconnecting connection,
  JetStream unavailable, a :class:`~notifiers.base.TransientDeliveryError`) ->
  ``nak(delay)`` with exponential backoff, until the policy's attempts (the message's
  ``metadata.num_delivered``) are used up;
* **anything else**, or attempts used up -> a dead letter on ``dead.<reason>.<initiative>``,
  then ``term``. Redelivering a message that failed for a reason that does not pass
  cannot help, and a plain ``nak()`` hands it back at once: a failure storm.

A dead letter carries the original payload; one that would not fit the connection's
``max_payload`` (from the server's INFO) carries a prefix instead, with the original size
and the sha256 of the original bytes (:func:`encode_dead_letter`), so it is always
publishable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import BaseModel, Field

from notifiers.base import TransientDeliveryError
from schemas.errors import BusUnavailableError, InvalidSubjectError
from schemas.subjects import TOKEN_RE, dead_subject, parse_event_subject

log = logging.getLogger("impactbus.failures")

HEADROOM: Final = 2048
"""Bytes of ``max_payload`` left for headers and the fields added around the payload."""
ERROR_CHARS: Final = 2000
"""An error message longer than this is cut: it may quote the (large) input."""

TRANSIENT: Final = (
    TimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.js.errors.ServiceUnavailableError,
    BusUnavailableError,
    TransientDeliveryError,
)

Outcome = Literal["retrying", "dead", "settled"]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may pass by itself (the bus or a provider is briefly unavailable)."""
    return isinstance(exc, TRANSIENT)


class RetryPolicy(BaseModel):
    """Exponential backoff, half jittered: ``uniform(c / 2, c)``, ``c = min(cap, base * 2**(n-1))``.

    Half rather than full jitter: a retry never comes back almost at once, and workers
    that failed together still spread out.
    """

    base_s: float = Field(2.0, gt=0)
    cap_s: float = Field(900.0, gt=0)
    attempts: int = Field(8, ge=1)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``retry_after`` is a floor)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1))
        wait = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
        return max(wait, retry_after or 0.0)


DEFAULT_POLICY: Final = RetryPolicy(base_s=1.0, cap_s=60.0, attempts=5)
"""The hub's defaults (``HubSettings``), for a loop that was given no policy."""


def dead_letter_limit(nc: Client) -> int:
    """The largest dead-letter body that is publishable on ``nc``."""
    return max(1024, nc.max_payload - HEADROOM)


def encode_dead_letter(body: dict[str, Any], original: bytes, limit: int) -> bytes:
    """The JSON of ``body`` with ``original`` as its ``payload``, cut to fit ``limit`` bytes.

    ``body`` may already hold the original as a parsed ``job``; when the whole does not
    fit, the job is dropped and ``payload`` holds a prefix of the original, with
    ``payload_truncated``, ``payload_bytes`` and ``payload_sha256`` to tell what it was.
    """
    if "error" in body and len(str(body["error"])) > ERROR_CHARS:
        body = {**body, "error": str(body["error"])[:ERROR_CHARS] + "..."}
    full = body if "job" in body else {**body, "payload": _text(original)}
    encoded = json.dumps(full).encode()
    if len(encoded) <= limit:
        return encoded
    cut = {k: v for k, v in body.items() if k != "job"}
    cut.update(
        payload_truncated=True,
        payload_bytes=len(original),
        payload_sha256=hashlib.sha256(original).hexdigest(),
        payload="",
    )
    room = limit - len(json.dumps(cut).encode())
    # JSON escaping writes at most 6 bytes per input byte (a U+FFFD or control character
    # as \uXXXX), so a prefix of room // 6 bytes always fits.
    cut["payload"] = _text(original[: max(0, room) // 6])
    return json.dumps(cut).encode()


def message_initiative(subject: str) -> str:
    """The initiative a message's subject names (events and jobs), else ``unknown``."""
    try:
        return parse_event_subject(subject).initiative
    except InvalidSubjectError:
        parts = subject.split(".")
        if len(parts) == 3 and TOKEN_RE.fullmatch(parts[2]):
            return parts[2]
        return "unknown"


DeadLetterFor = Callable[[Msg, BaseException], tuple[str, dict[str, Any]]]
"""(dead-letter subject, fields) for a failed message; the payload and common fields are
added by :class:`Failures`."""


def generic_dead_letter(msg: Msg, exc: BaseException) -> tuple[str, dict[str, Any]]:
    """``dead.failed.<initiative>``: a message its consumer could not handle."""
    return dead_subject("failed", message_initiative(msg.subject)), {"reason": "failed"}


class Failures:
    """Settles the messages one consumer failed to handle (see the module notes)."""

    def __init__(
        self,
        nc: Client,
        name: str,
        policy: RetryPolicy = DEFAULT_POLICY,
        *,
        dead_letter: DeadLetterFor = generic_dead_letter,
    ) -> None:
        self.nc = nc
        self.name = name
        self.policy = policy
        self.dead_letter = dead_letter
        self.counts: dict[str, int] = {"retrying": 0, "dead": 0, "dead_failed": 0}

    async def settle(self, msg: Msg, exc: BaseException) -> Outcome:
        """Retry ``msg`` later or dead-letter it, for the failure ``exc``; log one line.

        A message the handler settled before it raised is left as it is (``settled``).
        """
        if msg.is_acked:
            log.warning("%s: %s failed after it was settled: %s", self.name, msg.subject, exc)
            return "settled"
        attempt = msg.metadata.num_delivered or 1
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if is_transient(exc) and attempt < self.policy.attempts:
            return await self._retry(msg, attempt, reason)
        try:
            subject, fields = self.dead_letter(msg, exc)
            body = {
                "reason": "failed",
                "error": reason,
                "subject": msg.subject,
                "consumer": self.name,
                "attempts": attempt,
                "failed_at": datetime.now(UTC).isoformat(),
                **fields,
            }
            payload = encode_dead_letter(body, msg.data, dead_letter_limit(self.nc))
            meta = msg.metadata
            await asyncio.wait_for(
                self.nc.jetstream().publish(
                    subject,
                    payload,
                    headers={
                        "Nats-Msg-Id": f"dead-{meta.stream}-{meta.consumer}-{meta.sequence.stream}"
                    },
                ),
                10,
            )
            await msg.term()
        except Exception as dead_exc:  # the bus is down: keep the message
            self.counts["dead_failed"] += 1
            log.warning(
                "%s: cannot dead-letter %s (%s) after: %s", self.name, msg.subject, dead_exc, reason
            )
            await _nak(msg, self.policy.cap_s)
            return "retrying"
        self.counts["dead"] += 1
        log.warning(
            "%s: dead letter for %s on attempt %d: %s", self.name, msg.subject, attempt, reason
        )
        return "dead"

    async def _retry(self, msg: Msg, attempt: int, reason: str) -> Outcome:
        delay = self.policy.delay(attempt)
        await _nak(msg, delay)
        self.counts["retrying"] += 1
        log.warning(
            "%s: %s failed (attempt %d of %d), retrying in %.3gs: %s",
            self.name,
            msg.subject,
            attempt,
            self.policy.attempts,
            delay,
            reason,
        )
        return "retrying"


async def _nak(msg: Msg, delay: float) -> None:
    try:
        await msg.nak(delay=delay)
    except Exception as exc:  # not settled: JetStream redelivers after ack_wait
        log.debug("could not nak %s: %s", msg.subject, exc)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
