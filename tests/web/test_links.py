"""Signed personal links: tokens, the secret key, and the LinkMaker the hub uses."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.delivery import Delivery
from schemas.events import new_event
from schemas.targets import EmailTarget
from services.config import HubSettings
from services.directory.links import (
    ExpiredLinkError,
    ForgedLinkError,
    LinkSigner,
    SignedLinks,
    UnsubscribeClaim,
    WrongRecipientError,
    check_owner,
    link_maker,
    load_secret_key,
)


def delivery(subscription: str | None = "maria-abc", digest: str | None = None) -> Delivery:
    event = new_event("milestone", "somerville", "market", {"title": "Opens", "status": "reached"})
    return Delivery(
        event=event,
        recipient="maria",
        subscription=subscription,
        target=EmailTarget(address="maria@school.example"),
        digest_period=digest,
    )


def test_tokens_round_trip() -> None:
    signer = LinkSigner("k" * 40)
    assert signer.read_preferences(signer.preferences_token("maria")) == "maria"
    assert signer.read_unsubscribe(
        signer.unsubscribe_token("maria", "maria-1")
    ) == UnsubscribeClaim("maria", "maria-1")
    digest = signer.unsubscribe_token("maria", None, digest_channel="slack")
    assert signer.read_unsubscribe(digest) == UnsubscribeClaim("maria", None, "slack")


def test_each_kind_of_token_is_only_good_for_its_purpose() -> None:
    signer = LinkSigner("k" * 40)
    with pytest.raises(ForgedLinkError):
        signer.read_unsubscribe(signer.preferences_token("maria"))
    with pytest.raises(ForgedLinkError):
        signer.read_preferences(signer.unsubscribe_token("maria", "maria-1"))
    with pytest.raises(ForgedLinkError):
        signer.check("session", signer.preferences_token("maria"))


@pytest.mark.parametrize(
    "token",
    ["", "x", "eyJyIjoibWFyaWEifQ.AAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA", "a.b.c.d"],
)
def test_garbage_is_forged(token: str) -> None:
    with pytest.raises(ForgedLinkError):
        LinkSigner("k" * 40).read_preferences(token)


def test_another_key_is_forged_and_old_tokens_expire() -> None:
    token = LinkSigner("one key").preferences_token("maria")
    with pytest.raises(ForgedLinkError):
        LinkSigner("another key").read_preferences(token)
    signer = LinkSigner("one key")
    with pytest.raises(ExpiredLinkError, match="expired"):
        signer.check("preferences", token, max_age_s=-1)


def test_check_owner() -> None:
    check_owner("maria", "maria")
    with pytest.raises(WrongRecipientError):
        check_owner("bob", "maria")


def test_the_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    key = load_secret_key(tmp_path / "data")
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 40
    assert load_secret_key(tmp_path / "data") == key
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["secret_key"]


def test_the_environment_key_wins_and_max_age_is_configurable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPACTBUS_SECRET_KEY", "from the environment")
    monkeypatch.setenv("IMPACTBUS_LINK_MAX_AGE_DAYS", "7")
    signer = LinkSigner.from_settings(HubSettings(data_dir=tmp_path))
    assert signer.max_age_s == 7 * 86_400
    assert not (tmp_path / "secret_key").exists()
    token = LinkSigner("from the environment").preferences_token("maria")
    assert signer.read_preferences(token) == "maria"


def test_link_maker_builds_signed_absolute_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMPACTBUS_SECRET_KEY", raising=False)
    hub = HubSettings(data_dir=tmp_path, public_url="https://hub.example.org/")
    links = link_maker(hub)(delivery())
    signer = LinkSigner.from_settings(hub)
    assert links.preferences
    assert links.unsubscribe
    assert links.preferences.startswith("https://hub.example.org/preferences/")
    assert signer.read_preferences(links.preferences.rsplit("/", 1)[1]) == "maria"
    claim = signer.read_unsubscribe(links.unsubscribe.rsplit("/", 1)[1])
    assert claim == UnsubscribeClaim("maria", "maria-abc")
    assert links.event == "https://hub.example.org/initiatives/somerville"

    digest = link_maker(hub)(delivery(None, "2026-11-22"))
    assert digest.unsubscribe is not None
    assert signer.read_unsubscribe(digest.unsubscribe.rsplit("/", 1)[1]).digest_channel == "email"
    assert link_maker(hub)(delivery(None)).unsubscribe is None
    assert datetime.now(UTC)  # tokens carry their own timestamp


def test_links_are_signed_once_per_subscription_and_signed_anew_after_the_refresh() -> None:
    signer = LinkSigner("k" * 40)
    links = SignedLinks(signer, "https://hub.example.org")

    first, again = links(delivery("maria-abc")), links(delivery("maria-abc"))
    other = links(delivery("maria-def"))

    assert again is first  # reused, not signed again
    assert other.unsubscribe != first.unsubscribe
    assert first.unsubscribe is not None
    assert other.unsubscribe is not None
    assert signer.read_unsubscribe(other.unsubscribe.rsplit("/", 1)[1]).subscription == "maria-def"
    assert signer.read_unsubscribe(first.unsubscribe.rsplit("/", 1)[1]).subscription == "maria-abc"

    fresh = SignedLinks(signer, "https://hub.example.org", refresh_s=0)
    assert fresh(delivery()) is not fresh(delivery())
