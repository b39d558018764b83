"""Sign-in is throttled per client address and per token id, over real HTTP.

Clients bind to other loopback addresses (127.0.0.2, 127.0.0.3) to stand for other
machines; the hub listens on 127.0.0.1.
"""

from __future__ import annotations

import httpx
import pytest

from services.directory.auth import create_token, split_token
from services.directory.ratelimit import RateLimitedError
from services.web.throttle import LoginThrottle
from tests.web.conftest import WebHub

TRIES = 60


def client_at(hub: WebHub, address: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=hub.url, transport=transport, timeout=15)


async def test_wrong_tokens_get_429_and_the_owner_still_signs_in(web_hub: WebHub) -> None:
    token_id, good = await create_token(web_hub.bus, "backbone", ["somerville"])
    statuses: list[int] = []
    async with client_at(web_hub, "127.0.0.2") as attacker:
        for i in range(TRIES):
            r = await attacker.post("/login", data={"token": f"ib_{token_id}_guess{i}"})
            statuses.append(r.status_code)
        assert statuses[0] == 401
        assert 429 in statuses
        limited = statuses.index(429)
        assert set(statuses[limited:]) == {429}  # throttled for good, not now and then
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["content-type"].startswith("text/html")
        assert "Too many sign-in attempts" in r.text
        # throttled before checking: the right token from that address waits too
        r = await attacker.post("/login", data={"token": good})
        assert r.status_code == 429

    # another address that failed a few times itself is refused on that token id ...
    async with client_at(web_hub, "127.0.0.3") as other:
        r = await other.post("/login", data={"token": "ib_0123456789abcdef_nope"})
        assert r.status_code == 401
        r = await other.post("/login", data={"token": f"ib_{token_id}_guess"})
        assert r.status_code == 429

    # ... but the owner, from their own address, signs in with the right token
    r = await web_hub.client.post("/login", data={"token": good, "next": "/post"})
    assert r.status_code == 303, r.text
    assert (await web_hub.client.get("/post")).status_code == 200


async def test_many_made_up_tokens_from_one_address_get_429(web_hub: WebHub) -> None:
    statuses = []
    async with client_at(web_hub, "127.0.0.2") as attacker:
        for i in range(TRIES):
            r = await attacker.post("/login", data={"token": f"ib_{i:016x}_x"})
            statuses.append(r.status_code)
    assert 429 in statuses
    assert "Retry-After" in r.headers
    # someone else at another address is not affected
    assert (await web_hub.client.post("/login", data={"token": "nonsense"})).status_code == 401


def test_buckets_refill_at_their_rate() -> None:
    now = [0.0]
    throttle = LoginThrottle(failures_per_min=6, burst=2, clock=lambda: now[0])
    token = "ib_0123456789abcdef_x"
    throttle.check("a", token)
    throttle.failed("a", token)
    throttle.failed("a", token)
    with pytest.raises(RateLimitedError) as refused:
        throttle.check("a", token)
    assert refused.value.retry_after_header == "10"
    now[0] = 10.0
    throttle.check("a", token)  # one failure refilled: may try again
    assert split_token(token)[0] == "0123456789abcdef"
