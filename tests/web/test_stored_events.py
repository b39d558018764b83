"""Events stored under older rules still show on the initiative page and in its feeds.

They go onto EVENTS as raw JSON, as a data system or an older hub stored them; the
page and feeds read the stream back leniently and show an en dash for what they cannot show.
"""

from __future__ import annotations

from xml.etree import ElementTree

from schemas.bounds import UNSHOWN
from services.bus import EVENTS
from tests.oldrule import old_events, subject_of
from tests.web.conftest import WebHub


async def _store(web_hub: WebHub, raws: list[bytes]) -> None:
    for raw in raws:
        await web_hub.bus.js.publish(subject_of(raw), raw, stream=EVENTS)


async def test_page_and_feeds_show_old_rule_events_with_a_dash(web_hub: WebHub) -> None:
    await _store(web_hub, old_events())
    page = await web_hub.client.get("/initiatives/somerville")
    assert page.status_code == 200, page.text[-2000:]
    assert "Healthy weight" in page.text
    assert UNSHOWN in page.text
    assert "Late news 0" in page.text
    for path in ("/feeds/somerville.atom", "/feeds/somerville/metric.atom"):
        feed = await web_hub.client.get(path)
        assert feed.status_code == 200, feed.text[-2000:]
        root = ElementTree.fromstring(feed.content)  # noqa: S314 - our own feed
        contents = [e.text or "" for e in root.iter("{http://www.w3.org/2005/Atom}content")]
        assert any(UNSHOWN in c for c in contents)
    meetings = await web_hub.client.get("/feeds/somerville/meeting.atom")
    assert meetings.status_code == 200
    assert "Steering" in meetings.text


async def test_two_line_textarea_from_the_form_is_accepted_with_lf(web_hub: WebHub) -> None:
    csrf = await web_hub.login()
    form = {
        "csrf": csrf,
        "initiative": "somerville",
        "kind": "update",
        "event_id": "01JDEMO0000000000000000002",
        "title": "Two lines",
        "body": "First line\r\nSecond line\rThird line",
        "topic": "",
        "action": "publish",
    }
    r = await web_hub.client.post("/post", data=form)
    assert r.status_code == 303, r.text
    [msg] = await _stored(web_hub)
    assert b'"body":"First line\\nSecond line\\nThird line"' in msg


async def test_an_rtl_override_in_a_form_title_is_dropped(web_hub: WebHub) -> None:
    csrf = await web_hub.login()
    form = {
        "csrf": csrf,
        "initiative": "somerville",
        "kind": "update",
        "event_id": "01JDEMO0000000000000000003",
        "title": "Invoice \u202egpj.exe",
        "topic": "invoice",
        "action": "publish",
    }
    r = await web_hub.client.post("/post", data=form)
    assert r.status_code == 303, r.text
    [msg] = await _stored(web_hub)
    assert b'"title":"Invoice gpj.exe"' in msg


async def _stored(web_hub: WebHub) -> list[bytes]:
    info = await web_hub.bus.js.stream_info(EVENTS)
    return [
        (await web_hub.bus.js.get_msg(EVENTS, seq)).data or b""
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def test_form_number_beyond_the_bound_is_shown_beside_the_field(web_hub: WebHub) -> None:
    csrf = await web_hub.login()
    form = {
        "csrf": csrf,
        "initiative": "somerville",
        "kind": "metric",
        "event_id": "01JDEMO0000000000000000004",
        "indicator": "Healthy weight",
        "value": "1e308",
        "topic": "",
        "action": "publish",
    }
    r = await web_hub.client.post("/post", data=form)
    assert r.status_code == 422
    assert "one trillion" in r.text
    assert await web_hub.events() == 0
