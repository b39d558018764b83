"""Standard Webhooks 1.0 signatures: the ``whsec_`` secret format, signing and verifying.

The signature is ``base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"))``
where ``key`` is the base64 text after ``whsec_`` in the secret. The webhook notifier
signs with :func:`signature_header`; receivers check with :func:`verify` (or any
Standard Webhooks library).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random_secrets
import time
from collections.abc import Mapping, Sequence
from typing import Final

from schemas.errors import InvalidInputError

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the secret format's prefix, not a secret


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret.

    Raises:
        ValueError: no ``whsec_`` prefix, bad base64, or a key outside 24 to 64 bytes.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret's key must be 24 to 64 bytes")
    return key


def new_secret() -> str:
    """A fresh random ``whsec_`` secret (32 bytes)."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature, ``v1,<base64 HMAC-SHA256>``.

    Args:
        secret: a ``whsec_<base64>`` secret.
        msg_id: the ``webhook-id`` header.
        timestamp: the ``webhook-timestamp`` header (unix seconds).
        body: the exact request body.

    Raises:
        ValueError: the secret is malformed.
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per secret, space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> None:
    """Check a received webhook's signature and timestamp, as a receiver would.

    Args:
        secrets: the secrets any one of which may have signed (old and new in a rotation).
        headers: the request headers (names in any case).
        body: the exact request body.
        tolerance: how many seconds the timestamp may be away from ``now``.
        now: unix time to compare with; the current time by default.

    Raises:
        InvalidInputError: a header is missing, the timestamp is out of tolerance, or no
            signature matches.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        offered = lower["webhook-signature"].split()
    except (KeyError, ValueError):
        raise InvalidInputError("missing or malformed webhook-* headers") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidInputError(f"webhook-timestamp {timestamp} is outside the tolerance")
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, sig) for sig in offered if sig.startswith("v1,")):
            return
    raise InvalidInputError("no webhook-signature matches")
