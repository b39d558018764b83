"""Throttling sign-in: wrong tokens cost the address and the token id they were tried on.

``POST /login`` checks a pasted API token. Each *failed* sign-in takes one token from two
buckets (:class:`services.directory.ratelimit.RateLimiter`): the client address's and, when the
pasted value has the ``ib_<id>_<secret>`` form, that token id's. Successful sign-ins cost
nothing.

* An address whose bucket is empty is answered ``429`` with ``Retry-After`` before any
  token is checked: guessing from one address is slow.
* A token id whose bucket is empty (guesses at one token from many addresses) is refused
  the same way, but only to addresses that have failed recently themselves. An address
  with a clean record is still checked, so the token's owner, signing in from their own
  address with the right token, is not locked out by someone else's failures.

The buckets live in the process, like the API's rate limit: with N API processes an
address gets up to N times the attempts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.directory.auth import AuthenticationError, split_token
from services.directory.ratelimit import RateLimitedError, RateLimiter


class LoginThrottle:
    """Failed sign-ins per client address and per token id.

    Args:
        failures_per_min: how fast a bucket refills (failures a minute, after the burst).
        burst: failures allowed at once, per address and per token id.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        failures_per_min: float = 10,
        burst: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        rate = failures_per_min / 60
        self.by_address = RateLimiter(rate, burst, clock)
        self.by_token = RateLimiter(rate, burst, clock)

    def check(self, address: str, token: str) -> None:
        """Refuse a sign-in attempt before its token is checked, when throttled.

        Raises:
            RateLimitedError: too many recent failures from ``address``, or on the token
                id of ``token`` from an address that failed too.
        """
        wait = self.by_address.peek(address)
        if wait == 0 and not self.by_address.is_full(address):
            token_id = _token_id(token)
            if token_id is not None:
                wait = self.by_token.peek(token_id)
        if wait > 0:
            raise RateLimitedError("too many failed sign-ins", wait)

    def failed(self, address: str, token: str) -> None:
        """Count one failed sign-in from ``address`` with ``token``."""
        self.by_address.wait_time(address)
        token_id = _token_id(token)
        if token_id is not None:
            self.by_token.wait_time(token_id)


def _token_id(token: str) -> str | None:
    try:
        return split_token(token)[0]
    except AuthenticationError:
        return None
