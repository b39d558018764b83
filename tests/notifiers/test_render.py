"""The email templates and the pure presentation helpers."""

from __future__ import annotations

import pytest
from markupsafe import Markup

from notifiers.base import Links
from notifiers.email import FOOTER_SLOT, event_context, render_bodies
from notifiers.presentation import paragraphs
from notifiers.render import environment, render
from notifiers.text import metric_progress, number, with_unit
from schemas.events import MetricUpdate
from tests.notifiers.conftest import DeliveryFactory, make_event

KINDS = ["metric", "milestone", "meeting", "update"]
HOSTILE = "<b>bold</b> & <script>x</script>"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["html", "txt"])
def test_every_kind_renders(kind: str, fmt: str) -> None:
    ctx = event_context(make_event(kind), "Europe/Berlin")
    slot = Markup(FOOTER_SLOT) if fmt == "html" else FOOTER_SLOT  # noqa: S704 - constant
    out = render(f"email/{kind}.{fmt}.j2", footer_slot=slot, **ctx)
    assert "somerville" in out
    assert "shape-up" in out
    assert "02 Oct 2026, 11:30 (Europe/Berlin)" in out  # event time in the recipient's zone
    assert out.count(FOOTER_SLOT) == 1
    assert out.rstrip().endswith("</html>" if fmt == "html" else FOOTER_SLOT)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "metric",
            ["42.5%", "2026-10", "30%", "60%", "higher is better", "41%", "walking-school-bus"],
        ),
        ("milestone", ["Farmers market opens", "At risk", "2026-11-01", "Permit still pending."]),
        (
            "meeting",
            [
                "Steering committee",
                "01 Oct 2026, 10:00 (Europe/Berlin)",
                "Ann Lee, Bo Diaz",
                "We reviewed the dashboard.",
                "Adopt the shared BMI indicator",
                "Draft the data agreement",
                "2026-10-15",
            ],
        ),
        ("update", ["New partner: Somerville YMCA", "We welcome the YMCA.", "ymca?ref=hub"]),
    ],
)
def test_every_field_is_shown(
    kind: str, expected: list[str], make_delivery: DeliveryFactory
) -> None:
    text, html = render_bodies(make_delivery(kind, timezone="Europe/Berlin"), Links())
    for value in expected:
        assert value in text, value
        assert value in html, value


def test_progress_bar_only_with_baseline_and_target(make_delivery: DeliveryFactory) -> None:
    _, with_bar = render_bodies(make_delivery("metric"), Links())
    _, without = render_bodies(make_delivery("metric", baseline=None), Links())
    assert 'width="41%"' in with_bar
    assert "of the way" not in without


def test_autoescape_is_on_for_html_and_off_for_text() -> None:
    env = environment()
    assert callable(env.autoescape)
    assert env.autoescape("email/update.html.j2") is True
    assert env.autoescape("email/update.txt.j2") is False
    ctx = event_context(make_event("update", title=HOSTILE, body=HOSTILE), "UTC")
    html = render("email/update.html.j2", footer_slot=Markup(FOOTER_SLOT), **ctx)  # noqa: S704
    text = render("email/update.txt.j2", footer_slot=FOOTER_SLOT, **ctx)
    assert "<script>" not in html
    assert "<b>bold</b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;" in html
    assert HOSTILE in text


def test_forged_footer_slot_in_user_text_is_inert(make_delivery: DeliveryFactory) -> None:
    links = Links(unsubscribe="https://hub.example.org/u/tok")
    text, html = render_bodies(make_delivery("update", body=f"before {FOOTER_SLOT} after"), links)
    assert text.count("https://hub.example.org/u/tok") == 1
    assert text.index(f"before {FOOTER_SLOT} after") < text.index("https://hub.example.org/u/tok")
    assert html.count("https://hub.example.org/u/tok") == 1


def test_footer_links(make_delivery: DeliveryFactory) -> None:
    links = Links(preferences="https://h.example/p?a=1&b=2", unsubscribe="https://h.example/u")
    text, html = render_bodies(make_delivery(), links)
    assert 'href="https://h.example/p?a=1&amp;b=2"' in html
    assert "Unsubscribe: https://h.example/u" in text
    plain, _ = render_bodies(make_delivery(), Links())
    assert "Unsubscribe" not in plain


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1234567.0, "1,234,567"),
        (12.5, "12.5"),
        (12.0, "12"),
        (3.14159, "3.14"),
        (0.0042, "0.0042"),
        (-2.5, "-2.5"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert number(value) == text


def test_with_unit() -> None:
    assert with_unit(42.0, "%") == "42%"
    assert with_unit(12.5, "kg") == "12.5 kg"
    assert with_unit(3.0, None) == "3"


@pytest.mark.parametrize(
    ("value", "baseline", "target", "direction", "percent"),
    [
        (45, 30, 60, "increase", 50),
        (25, 30, 20, "decrease", 50),
        (70, 30, 60, "increase", 100),
        (20, 30, 60, "increase", 0),
        (45, None, 60, "increase", None),
        (45, 30, None, "increase", None),
        (45, 30, 30, "increase", 100),  # no way to go, and the value is past the target
        (25, 30, 30, "increase", 0),
    ],
)
def test_progress_percent(
    value: float, baseline: float | None, target: float | None, direction: str, percent: int | None
) -> None:
    metric = MetricUpdate(
        indicator="x",
        value=value,
        baseline=baseline,
        target=target,
        direction=direction,
    )
    assert metric_progress(metric) == percent


def test_paragraphs() -> None:
    assert paragraphs("a\nb\n\n  \nc\n") == [["a", "b"], ["c"]]
    assert paragraphs("") == []


def test_unknown_timezone_falls_back_to_utc() -> None:
    ctx = event_context(make_event("update"), "Mars/Olympus")
    assert ctx["when"] == "02 Oct 2026, 09:30 (UTC)"
