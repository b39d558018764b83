"""Every page the hub serves works without internet: nothing is loaded from another host.

Each page route is fetched over HTTP from a real hub with real data (a person, events of
every kind, a caught email in the outbox), and every resource it would make a browser
load (``src``, ``href`` of non-links, form ``action``, CSS ``url()``, emails shown in
``srcdoc``) must be on the hub itself. Links a reader may click (``<a href>``) are content,
not loaded, and may go anywhere.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

from starlette.routing import BaseRoute

from services.api.app import create_app
from tests.web.conftest import WebHub

LOADED: frozenset[str] = frozenset({"src", "href", "action", "srcset", "poster", "data"})
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""", re.I)
CDNS = ("jsdelivr", "unpkg.com", "cdnjs", "googleapis", "gstatic", "fastapi.tiangolo.com")
# GET routes that serve no HTML page (JSON, metrics, the assets the pages load)
NOT_PAGES = frozenset(
    {
        "/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
        "/static/web.css",
        "/docs/assets/start.js",
        "/docs/assets/{name}",
        "/v1/recipients",
        "/v1/recipients/{recipient_id}",
        "/v1/subscriptions",
        "/v1/initiatives/{initiative}/events",
    }
)


class Resources(HTMLParser):
    """The URLs a browser would load for a page (including emails shown in ``srcdoc``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "srcdoc":
                inner = Resources()
                inner.feed(value)
                self.urls += inner.urls
            elif name == "style":
                self.urls += [a or b for a, b in CSS_URL.findall(value)]
            elif name in LOADED and not (tag == "a" and name == "href"):
                self.urls += (
                    [u.split()[0] for u in value.split(",")] if name == "srcset" else [value]
                )

    def handle_data(self, data: str) -> None:  # <style> blocks
        self.urls += [a or b for a, b in CSS_URL.findall(data)]


def external(body: str, hub_host: str, *, escaped_html: bool = False) -> list[str]:
    """The URLs in ``body`` that point at any host but the hub's."""
    parser = Resources()
    parser.feed(html.unescape(body) if escaped_html else body)
    return [u for u in parser.urls if urlsplit(u).netloc not in ("", hub_host)]


def walk(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        # included routers are kept as one route holding the router (FastAPI >= 0.16x)
        inner = getattr(route, "original_router", None)
        yield from walk(inner.routes) if inner is not None else [route]


async def test_no_page_loads_anything_from_another_host(web_hub: WebHub) -> None:
    hub = web_hub
    host = urlsplit(hub.url).netloc
    _, [sub] = await hub.person("maria", "impact.somerville.>")
    await hub.post(title="Market opens on Saturdays", topic="market")
    await hub.post("update", "news", title="Read the report", url="https://example.org/report")
    await hub.post(
        "meeting", "steering", title="Steering", held_at="2027-01-12T20:00:00Z", attendees=["A"]
    )
    await hub.post(
        "metric", "bmi", indicator="Healthy weight", value=71.5, unit="%", baseline=64, target=75
    )
    await hub.wait_outbox(4, "email")
    csrf = await hub.login()
    prefs = hub.signer.preferences_token("maria")
    unsub = hub.signer.unsubscribe_token("maria", sub.id)
    preview = {
        "csrf": csrf,
        "initiative": "somerville",
        "kind": "update",
        "title": "Preview me",
        "url": "https://example.org/more",
    }
    gets = {
        "/docs": "/docs",
        "/login": "/login",
        "/post": "/post?initiative=somerville&kind=meeting",
        "/initiatives/{initiative}": "/initiatives/somerville",
        "/feeds/{initiative}.atom": "/feeds/somerville.atom",
        "/feeds/{initiative}/{kind}.atom": "/feeds/somerville/meeting.atom",
        "/preferences/{token}": f"/preferences/{prefs}",
        "/unsubscribe/{token}": f"/unsubscribe/{unsub}",
        "/outbox": "/outbox",
    }
    pages = {template: await hub.client.get(url) for template, url in gets.items()}
    pages["POST /post"] = await hub.client.post("/post", data=preview)
    pages["POST /unsubscribe"] = await hub.client.post(f"/unsubscribe/{unsub}")
    pages["404"] = await hub.client.get("/initiatives/Not%20One")
    pages["POST /logout"] = await hub.client.post("/logout", data={"csrf": csrf})

    for name, r in pages.items():
        assert r.status_code in (200, 303, 404), (name, r.status_code)
        page = r.text
        found = external(page, host, escaped_html=name.startswith("/feeds"))
        assert found == [], (name, found)
        assert not [c for c in CDNS if c in page.lower()], name
    assert "Preview me" in pages["POST /post"].text  # the preview really rendered
    assert 'id="swagger-ui"' in pages["/docs"].text
    assert "Healthy weight" in pages["/initiatives/{initiative}"].text
    assert "<iframe" in pages["/outbox"].text

    routes = {
        path
        for r in walk(create_app(hub.rt).routes)
        if "GET" in (getattr(r, "methods", None) or ()) and (path := getattr(r, "path", ""))
    }
    assert routes - NOT_PAGES == set(gets), "a page route is not checked here"
