"""Personal links carry the version of what they were made for, against a real hub.

A subscription removed and made again, or a recipient deleted and created again under
the same id, is a new version: links from before answer 410 and change nothing. Links
made before links carried versions keep working until they expire.
"""

from __future__ import annotations

import re

from services.bus import KV_RECIPIENTS
from tests.web.conftest import WebHub


def _link(mail: dict[str, object], kind: str) -> str:
    found = re.search(rf"/{kind}/([A-Za-z0-9_.\-]+)", str(mail["text"]))
    if kind == "unsubscribe":
        headers = mail["headers"]
        assert isinstance(headers, dict)
        found = re.search(r"/unsubscribe/([^>]+)>", str(headers["List-Unsubscribe"]))
    assert found, mail
    return found.group(1)


async def test_an_old_unsubscribe_link_does_not_remove_a_later_subscription(
    web_hub: WebHub,
) -> None:
    _, [sub] = await web_hub.person("maria")
    await web_hub.post()
    [mail] = await web_hub.wait_outbox(1, "email")
    old = _link(mail, "unsubscribe")
    assert (await web_hub.client.post(f"/unsubscribe/{old}")).status_code == 200
    assert await web_hub.directory.list_subscriptions("maria") == []

    again = await web_hub.directory.subscribe("maria", sub.pattern, sub.channel)
    assert again.id == sub.id  # the same derived id: only the version tells them apart

    for method in ("GET", "POST"):
        r = await web_hub.client.request(method, f"/unsubscribe/{old}")
        assert r.status_code == 410, (method, r.text)
        assert "this link was for a subscription that has since been removed" in r.text
    assert await web_hub.directory.list_subscriptions("maria") == [again]

    # the link in the next message is the new subscription's, and it works
    await web_hub.post(topic="school-gardens", title="Gardens planted")
    newer = (await web_hub.wait_outbox(2, "email"))[-1]
    assert (
        await web_hub.client.post(f"/unsubscribe/{_link(newer, 'unsubscribe')}")
    ).status_code == 200
    assert await web_hub.directory.list_subscriptions("maria") == []


async def test_an_old_preferences_link_does_not_open_a_new_recipient_of_the_same_id(
    web_hub: WebHub,
) -> None:
    await web_hub.person("maria")
    await web_hub.post()
    [mail] = await web_hub.wait_outbox(1, "email")
    old = _link(mail, "preferences")
    assert (await web_hub.client.get(f"/preferences/{old}")).status_code == 200

    await web_hub.directory.delete_recipient("maria")
    await web_hub.person("maria", email="someone.else@school.example")

    r = await web_hub.client.get(f"/preferences/{old}")
    assert r.status_code == 410
    assert "someone.else" not in r.text
    assert "has since been removed" in r.text
    r = await web_hub.client.post(f"/preferences/{old}", data={"csrf": old, "action": "pause"})
    assert r.status_code == 410
    assert (await web_hub.directory.get_recipient("maria")).paused_until is None


async def test_subscribing_again_keeps_the_links_already_sent(web_hub: WebHub) -> None:
    _, [sub] = await web_hub.person("maria")
    await web_hub.post()
    [mail] = await web_hub.wait_outbox(1, "email")
    same = await web_hub.directory.subscribe("maria", sub.pattern, sub.channel)
    assert same.created_at == sub.created_at
    await web_hub.directory.put_recipient(
        (await web_hub.directory.get_recipient("maria")).model_copy(update={"created": None})
    )  # a replacement keeps the stored creation time
    assert (
        await web_hub.client.get(f"/preferences/{_link(mail, 'preferences')}")
    ).status_code == 200
    assert (
        await web_hub.client.post(f"/unsubscribe/{_link(mail, 'unsubscribe')}")
    ).status_code == 200
    assert await web_hub.directory.list_subscriptions("maria") == []


async def test_links_without_a_version_and_records_without_one_still_work(
    web_hub: WebHub,
) -> None:
    # a recipient stored before recipients had a creation time
    kv = await web_hub.bus.kv(KV_RECIPIENTS)
    await kv.put("ana", b'{"id":"ana","email":"ana@school.example"}')
    assert (await web_hub.directory.get_recipient("ana")).created is None
    sub = await web_hub.directory.subscribe("ana", "impact.somerville.>", "email")

    prefs = web_hub.signer.preferences_token("ana")  # made before links had versions
    r = await web_hub.client.get(f"/preferences/{prefs}")
    assert r.status_code == 200
    assert "ana@school.example" in r.text
    unsubscribe = web_hub.signer.unsubscribe_token("ana", sub.id)
    assert (await web_hub.client.post(f"/unsubscribe/{unsubscribe}")).status_code == 200
    assert await web_hub.directory.list_subscriptions("ana") == []
