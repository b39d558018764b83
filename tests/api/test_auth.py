"""Tokens: format, hashing, role table, revocation reaching every API process."""

from __future__ import annotations

import asyncio
import time

import pytest

from schemas.errors import InvalidInputError, InvalidSubjectError, NotFoundError
from services.bus import KV_TOKENS, Bus, NatsSettings
from services.bus.kv import open_kv
from services.bus.watch import KvMirror
from services.directory.auth import (
    AuthenticationError,
    Authenticator,
    Principal,
    TokenRecord,
    create_token,
    list_tokens,
    revoke_token,
    split_token,
)
from services.directory.ratelimit import RateLimitedError, RateLimiter
from tests.api.conftest import Api, ApiFactory, bearer

BACKBONE = Principal("b", "backbone", frozenset({"somerville"}))
SYSTEM = Principal("s", "system", frozenset({"somerville"}))
PARTNER = Principal("p", "partner", frozenset({"somerville"}), recipient="maria")
ADMIN = Principal("a", "admin", frozenset())


@pytest.mark.parametrize(
    ("who", "kind", "initiative", "allowed"),
    [
        (ADMIN, "meeting", "anywhere", True),
        (BACKBONE, "milestone", "somerville", True),
        (BACKBONE, "metric", "cambridge", False),
        (SYSTEM, "metric", "somerville", True),
        (SYSTEM, "update", "somerville", False),
        (SYSTEM, "metric", "cambridge", False),
        (PARTNER, "metric", "somerville", False),
    ],
)
def test_who_may_publish(who: Principal, kind: str, initiative: str, allowed: bool) -> None:
    assert who.may_publish(kind, initiative) is allowed  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("who", "recipient", "pattern", "allowed"),
    [
        (ADMIN, "joe", "impact.>", True),
        (BACKBONE, "joe", "impact.somerville.>", True),
        (BACKBONE, "joe", "impact.somerville.metric.bmi", True),
        (BACKBONE, "joe", "impact.*.metric.>", False),
        (BACKBONE, "joe", "impact.>", False),
        (BACKBONE, "joe", "impact.cambridge.>", False),
        (PARTNER, "maria", "impact.somerville.>", True),
        (PARTNER, "maria", "impact.cambridge.>", False),
        (PARTNER, "joe", "impact.somerville.>", False),
        (SYSTEM, "joe", "impact.somerville.>", False),
    ],
)
def test_who_may_subscribe(who: Principal, recipient: str, pattern: str, allowed: bool) -> None:
    assert who.may_subscribe(recipient, pattern) is allowed


def test_malformed_pattern_is_an_input_error() -> None:
    with pytest.raises(InvalidSubjectError):
        BACKBONE.may_subscribe("joe", "impact.Somerville.>")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ib_",
        "ib_0123456789abcdef",
        "ib_0123456789abcdef_",
        "xx_0123456789abcdef_s",
        "ib_0123456789abcdeg_s",
        "ib_short_s",
        "ib_0123456789abcdef_" + "s" * 129,
    ],
)
def test_split_token_refuses_malformed(token: str) -> None:
    with pytest.raises(AuthenticationError):
        split_token(token)


def test_split_token_keeps_underscores_in_the_secret() -> None:
    assert split_token("ib_0123456789abcdef_a_b-c") == ("0123456789abcdef", "a_b-c")


def test_rate_limiter_refills_at_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2, burst=2, clock=lambda: now[0])
    assert limiter.wait_time("t") == 0
    assert limiter.wait_time("t") == 0
    assert limiter.wait_time("t") == pytest.approx(0.5)
    assert limiter.wait_time("other") == 0
    now[0] = 0.5
    assert limiter.wait_time("t") == 0
    with pytest.raises(RateLimitedError) as exc:
        limiter.check("t")
    assert exc.value.retry_after_header == "1"
    now[0] = 100.0
    assert limiter.wait_time("t") == 0  # refilled, capped at the burst
    assert limiter.wait_time("t") == 0
    assert limiter.wait_time("t") > 0


def test_rate_limiter_disabled() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.wait_time("t") == 0 for _ in range(1000))


async def test_tokens_are_stored_hashed(bus: Bus) -> None:
    token_id, token = await create_token(bus, "partner", ["somerville"], "maria", "portal")
    entry = await (await open_kv(bus, KV_TOKENS)).get(token_id)
    assert entry.value is not None
    assert split_token(token)[1].encode() not in entry.value
    [record] = await list_tokens(bus)
    assert (record.id, record.role, record.recipient, record.label) == (
        token_id,
        "partner",
        "maria",
        "portal",
    )


@pytest.mark.parametrize(
    ("role", "initiatives", "recipient"),
    [
        ("root", ["x"], None),
        ("backbone", [], None),
        ("partner", ["x"], None),
        ("system", ["x"], "maria"),
        ("backbone", ["Bad Name"], None),
    ],
)
async def test_create_token_refuses(
    bus: Bus, role: str, initiatives: list[str], recipient: str | None
) -> None:
    with pytest.raises(InvalidInputError):
        await create_token(bus, role, initiatives, recipient)


async def test_revoke_unknown_token(bus: Bus) -> None:
    with pytest.raises(NotFoundError):
        await revoke_token(bus, "0123456789abcdef")
    with pytest.raises(NotFoundError):
        await revoke_token(bus, "../../etc")


async def test_revocation_reaches_every_api_process_within_a_second(
    api: Api, api_factory: ApiFactory
) -> None:
    other_bus = await Bus.connect(api.bus.nc.connected_url.geturl(), NatsSettings())
    try:
        second = await api_factory(on_bus=other_bus)
        token_id, token = await create_token(api.bus, "backbone", ["somerville"])
        for server in (api, second):
            await until_status(server, token, 200)
        await revoke_token(api.bus, token_id)
        start = time.monotonic()
        for server in (api, second):
            await until_status(server, token, 401)
        assert time.monotonic() - start < 1.0
        r = await second.client.get("/v1/recipients", headers=bearer(token))
        assert r.json()["detail"] == "revoked token"
    finally:
        await other_bus.close()


async def until_status(api: Api, token: str, status: int, timeout: float = 5.0) -> None:
    """Poll until the API answers ``status`` for ``token`` (a new token or a revocation
    reaches the API's mirror through a KV watch: milliseconds, bounded here)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await api.client.get("/v1/recipients", headers=bearer(token))
        if r.status_code == status:
            return
        assert time.monotonic() < deadline, f"still {r.status_code}, wanted {status}"
        await asyncio.sleep(0.01)


async def test_a_token_the_mirror_has_not_seen_is_looked_up_within_a_budget(bus: Bus) -> None:
    kv = await open_kv(bus, KV_TOKENS)
    auth = Authenticator(KvMirror(kv, TokenRecord.model_validate_json), kv, lookups_per_s=2)
    # never started: the mirror knows no token, as right after another process created one
    _, token = await create_token(bus, "system", ["somerville"])
    with pytest.raises(AuthenticationError):
        auth.authenticate(f"Bearer {token}")
    assert (await auth.verify(f"Bearer {token}")).role == "system"
    await auth.verify(f"Bearer {token}")
    with pytest.raises(AuthenticationError, match="unknown"):
        await auth.verify(f"Bearer {token}")  # over budget: no lookup, unknown for now
    with pytest.raises(AuthenticationError):
        await auth.verify("Bearer ib_0123456789abcdef_nope")
