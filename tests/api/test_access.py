"""Who may change whose recipient: the rule as a table, then the same table over HTTP.

Two initiatives, A (``somerville``) and B (``oporajita``). Whose recipient the request is
about: one following only A, only B, both, nothing yet, or a new one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import pytest

from schemas.directory import Subscription
from services.directory.access import (
    Decision,
    recipient_change,
    recipient_deletion,
    subscription_added,
    subscription_removed,
)
from services.directory.auth import Principal
from services.directory.records import Directory
from tests.api.conftest import Api, bearer

A: Final = "somerville"
B: Final = "oporajita"
ON_A: Final = f"impact.{A}.>"
ON_B: Final = f"impact.{B}.>"
FOLLOWS: Final[dict[str, tuple[str, ...]]] = {
    "only-a": (ON_A,),
    "only-b": (ON_B,),
    "both": (ON_A, ON_B),
    "none": (),
}
WHOSE: Final = (*FOLLOWS, "new")
ACTIONS: Final = (
    "create",
    "replace contacts",
    "patch contacts",
    "pause",
    "disable channel",
    "delete",
    "subscribe to own initiative",
    "subscribe to other initiative",
    "remove subscription on own initiative",
    "remove subscription on other initiative",
)
CHANGED: Final = {
    "create": frozenset({"email", "name", "timezone"}),
    "replace contacts": frozenset({"email", "name"}),
    "patch contacts": frozenset({"email"}),
    "pause": frozenset({"paused_until"}),
    "disable channel": frozenset({"disabled_channels"}),
}
RID: Final = "x"
ROLES: Final = ("admin", "backbone A", "system A", "partner (own)", "partner (another's)")


def principal(role: str) -> Principal:
    """The token of a table row (the partner's own recipient is the one in the request)."""
    match role:
        case "admin":
            return Principal("0" * 16, "admin", frozenset())
        case "backbone A":
            return Principal("1" * 16, "backbone", frozenset({A}))
        case "system A":
            return Principal("2" * 16, "system", frozenset({A}))
        case "partner (own)":
            return Principal("3" * 16, "partner", frozenset({A}), RID)
        case _:
            return Principal("4" * 16, "partner", frozenset({A}), "someone-else")


def decide(who: Principal, action: str, whose: str) -> Decision:
    """The decision of the rule under test for one cell of the table."""
    follows = FOLLOWS.get(whose)
    if action in CHANGED:
        return recipient_change(who, RID, follows, CHANGED[action])
    if action == "delete":
        return recipient_deletion(who, RID, follows or ())
    if action == "subscribe to own initiative":
        return subscription_added(who, RID, f"impact.{A}.milestone.>")
    if action == "subscribe to other initiative":
        return subscription_added(who, RID, f"impact.{B}.milestone.>")
    if action == "remove subscription on own initiative":
        return subscription_removed(who, RID, ON_A)
    return subscription_removed(who, RID, ON_B)


def expected(role: str, action: str, whose: str) -> bool:
    """What the rule says, written out per role."""
    if role == "admin":
        return True
    if role in ("system A", "partner (another's)"):
        return False
    if role == "partner (own)":
        return action not in ("disable channel", "delete", "subscribe to other initiative")
    # backbone A
    if action.startswith(("subscribe", "remove")):
        return action.endswith("own initiative")
    return whose in ("only-a", "none", "new")


def cases() -> list[tuple[str, str, str]]:
    """Every (role, action, whose); ``create`` is about a new recipient, the rest not."""
    return [
        (role, action, whose)
        for role in ROLES
        for action in ACTIONS
        for whose in WHOSE
        if (action == "create") == (whose == "new")
    ]


@pytest.mark.parametrize(("role", "action", "whose"), cases())
def test_who_may_change_whose_recipient(role: str, action: str, whose: str) -> None:
    decision = decide(principal(role), action, whose)
    assert decision.allowed is expected(role, action, whose)
    assert decision.allowed or decision.reason  # a refusal always says why


def test_a_refusal_says_why_in_words() -> None:
    refusal = recipient_change(principal("backbone A"), "bea", (ON_B,), {"email"})
    assert not refusal.allowed
    assert refusal.reason.startswith("recipient 'bea' follows oporajita")
    assert "email address" in refusal.reason
    assert "admin" in refusal.reason
    assert "preference centre" in refusal.reason


@pytest.mark.parametrize("pattern", ["impact.*.milestone.>", "impact.>"])
def test_a_wildcard_initiative_is_outside_every_backbone(pattern: str) -> None:
    backbone = principal("backbone A")
    assert not recipient_change(backbone, "bea", (ON_A, pattern), {"email"}).allowed
    assert not recipient_deletion(backbone, "bea", (pattern,)).allowed
    assert recipient_change(principal("admin"), "bea", (pattern,), {"email"}).allowed


def test_a_replacement_that_changes_nothing_is_allowed() -> None:
    assert recipient_change(principal("backbone A"), "bea", (ON_B,), ()).allowed


# ------------------------------------------------------------------------- over HTTP


async def _setup(directory: Directory, rid: str, whose: str) -> None:
    if whose == "new":
        return
    await directory.add_recipient(id=rid, email=f"{rid}@school.example")
    for pattern in FOLLOWS[whose]:
        await directory.subscribe(rid, pattern, "email")


async def _act(api: Api, action: str, rid: str, h: dict[str, str]) -> int:
    c = api.client
    url = f"/v1/recipients/{rid}"
    until = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    sub = {"recipient": rid, "channel": "email"}
    match action:
        case "create" | "replace contacts":
            body = {"email": "attacker@evil.example", "name": "Changed"}
            response = await c.put(url, json=body, headers=h)
        case "patch contacts":
            response = await c.patch(url, json={"email": "attacker@evil.example"}, headers=h)
        case "pause":
            response = await c.patch(url, json={"paused_until": until}, headers=h)
        case "disable channel":
            response = await c.patch(url, json={"disabled_channels": ["email"]}, headers=h)
        case "delete":
            response = await c.delete(url, headers=h)
        case "subscribe to own initiative" | "subscribe to other initiative":
            initiative = A if action.endswith("own initiative") else B
            body = {**sub, "pattern": f"impact.{initiative}.milestone.>"}
            response = await c.post("/v1/subscriptions", json=body, headers=h)
        case _:
            # the derived id: the token may not even see the subscription it removes
            sub_id = Subscription.make_id(rid, _removed(action), "email")
            response = await c.delete(f"/v1/subscriptions/{sub_id}", headers=h)
    return response.status_code


def _removed(action: str) -> str:
    return ON_A if action.endswith("own initiative") else ON_B


async def test_the_table_holds_over_http(api: Api) -> None:
    directory = await Directory.open(api.bus)
    tokens = {
        "admin": await api.token("admin", ()),
        "backbone A": await api.token("backbone", (A,)),
    }
    n = 0
    for role, token in tokens.items():
        for action, whose in [(a, w) for r, a, w in cases() if r == role]:
            n += 1
            rid = f"r{n}"
            await _setup(directory, rid, whose)
            before = await directory.list_recipients()
            before_subs = await directory.list_subscriptions(recipient=rid)
            status = await _act(api, action, rid, bearer(token))
            if action.startswith("remove") and _removed(action) not in FOLLOWS[whose]:
                assert status == 404, (role, action, whose, status)  # nothing to remove
                continue
            if expected(role, action, whose):
                assert status in (200, 201, 204), (role, action, whose, status)
            else:
                assert status == 403, (role, action, whose, status)
                # nothing changed
                assert await directory.list_recipients() == before
                assert await directory.list_subscriptions(recipient=rid) == before_subs


async def test_a_backbone_reads_only_the_people_of_its_initiatives(api: Api) -> None:
    admin = bearer(await api.token("admin", ()))
    a = bearer(await api.token("backbone", ("somerville",)))
    people = {
        "ana": ["impact.somerville.>"],
        "bea": ["impact.oporajita.>"],
        "cai": ["impact.somerville.>", "impact.oporajita.>"],
        "dee": [],
    }
    for rid, patterns in people.items():
        body = {"email": f"{rid}@example.org"}
        assert (await api.client.put(f"/v1/recipients/{rid}", json=body, headers=admin)).is_success
        for pattern in patterns:
            sub = {"recipient": rid, "pattern": pattern, "channel": "email"}
            assert (await api.client.post("/v1/subscriptions", json=sub, headers=admin)).is_success
    listed = await api.client.get("/v1/recipients", headers=a)
    assert sorted(r["id"] for r in listed.json()) == ["ana", "cai", "dee"]
    refused = await api.client.get("/v1/recipients/bea", headers=a)
    assert refused.status_code == 403
    assert "oporajita" in refused.json()["detail"]
    assert "bea@" not in refused.text
    assert (await api.client.get("/v1/recipients/cai", headers=a)).json()[
        "email"
    ] == "cai@example.org"
    everyone = await api.client.get("/v1/recipients", headers=admin)
    assert len(everyone.json()) == 4
