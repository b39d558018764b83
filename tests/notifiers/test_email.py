"""The email notifier against a real SMTP server (aiosmtpd, in-process)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from notifiers.base import Links, PermanentDeliveryError, TransientDeliveryError
from notifiers.email import (
    EmailNotifier,
    compose_email,
    header_text,
    render_bodies,
    subject_line,
)
from notifiers.settings import SmtpSettings
from schemas.delivery import Delivery
from schemas.events import Update
from schemas.targets import EmailTarget
from services.bus import free_port
from tests.fakes.smtp import SmtpSink
from tests.notifiers.conftest import DeliveryFactory, build_delivery, make_event

SENDER = "Somerville hub <hub@example.org>"
LINKS = Links(
    preferences="https://hub.example.org/p/tok",
    unsubscribe="https://hub.example.org/u/tok",
    unsubscribe_mailto="unsubscribe+tok@hub.example.org",
)


def settings(sink: SmtpSink, **kw: object) -> SmtpSettings:
    return SmtpSettings(host=sink.host, port=sink.port, tls="none", from_address=SENDER, **kw)  # type: ignore[arg-type]


def links(delivery: Delivery) -> Links:
    return LINKS


def body(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


async def test_multipart_email_arrives_with_headers(
    smtp_sink: SmtpSink, make_delivery: DeliveryFactory
) -> None:
    delivery = make_delivery("metric")
    async with EmailNotifier(settings(smtp_sink), links) as notifier:
        result = await notifier.send(delivery)

    [msg] = smtp_sink.wait_for(1)
    assert msg.get_content_type() == "multipart/alternative"
    assert "42.5%" in body(msg, "plain")
    assert "<table" in body(msg, "html")
    assert "Children active 60 minutes a day" in body(msg, "html")
    assert msg["Subject"] == "[somerville] Children active 60 minutes a day: 42.5% (2026-10)"
    assert msg["To"] == "Ann Lee <ann@example.org>"
    assert msg["From"] == SENDER
    assert msg["Message-ID"] == f"<{delivery.job_id}@impactbus>" == result.provider_id
    assert msg["List-Id"] == "somerville <somerville.impactbus>"
    assert msg["List-Unsubscribe"].strip() == (
        "<https://hub.example.org/u/tok>, <mailto:unsubscribe+tok@hub.example.org>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.mail_from == "hub@example.org"
    assert msg.rcpt_tos == ("ann@example.org",)
    assert result.channel == "email"
    assert result.target == "email:ann@example.org"
    assert "https://hub.example.org/p/tok" in body(msg, "plain")


def test_message_id_is_stable_across_composes(make_delivery: DeliveryFactory) -> None:
    first = compose_email(make_delivery("update"), LINKS, SENDER)
    again = compose_email(make_delivery("update"), LINKS, SENDER)
    other = compose_email(make_delivery("update", address="bo@example.org"), LINKS, SENDER)
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"] != other["Message-ID"]


def test_threading_headers(make_delivery: DeliveryFactory) -> None:
    msg = compose_email(make_delivery(), LINKS, SENDER, in_reply_to="<first@impactbus>")
    assert msg["In-Reply-To"] == msg["References"] == "<first@impactbus>"
    bare = compose_email(make_delivery(), LINKS, SENDER, in_reply_to="first@impactbus\r\nBcc: x")
    assert bare["In-Reply-To"] == "<first@impactbusBcc:x>"


def test_no_unsubscribe_headers_without_links(make_delivery: DeliveryFactory) -> None:
    msg = compose_email(make_delivery(), Links(), SENDER)
    assert msg["List-Unsubscribe"] is None
    assert msg["List-Unsubscribe-Post"] is None


ENCODED = "=?utf-8?q?Hi=0D=0ABcc:_eve@evil.example?="
ENCODED_B64 = "=?utf-8?b?SGkNCkJjYzogZXZlQGV2aWwuZXhhbXBsZQ==?="


def _raw_crlf_delivery(base: Delivery) -> Delivery:
    # Bypasses validation, as a bug upstream might: the notifier must still hold.
    data = Update.model_construct(
        kind="update", title="Hi\r\nBcc: eve@evil.example\r\n", body="b", url=None
    )
    event = base.event.model_copy(update={"data": data})
    target = EmailTarget.model_construct(
        channel="email", address="ann@example.org", name="Ann\nCc: eve@evil.example"
    )
    return base.model_copy(update={"event": event, "target": target})


@pytest.mark.parametrize(
    "case",
    ["encoded-title", "encoded-b64-title", "encoded-name", "raw-crlf"],
)
async def test_header_injection_creates_no_header_and_no_recipient(
    case: str, smtp_sink: SmtpSink, make_delivery: DeliveryFactory
) -> None:
    if case == "encoded-title":
        delivery = make_delivery("update", title=ENCODED)
    elif case == "encoded-b64-title":
        delivery = make_delivery("update", title=ENCODED_B64)
    elif case == "encoded-name":
        delivery = make_delivery("update", name=ENCODED)
    else:
        delivery = _raw_crlf_delivery(make_delivery("update"))

    async with EmailNotifier(settings(smtp_sink)) as notifier:
        await notifier.send(delivery)

    [msg] = smtp_sink.wait_for(1)
    assert msg.rcpt_tos == ("ann@example.org",)
    assert [k.lower() for k in msg if k.lower() in ("bcc", "cc")] == []
    assert len(msg.get_all("To") or []) == 1
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.org"]
    header_block = msg.raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in header_block
    assert b"\nCc:" not in header_block
    assert "\n" not in msg["Subject"]
    assert "\r" not in msg["Subject"]


def test_script_in_title_is_escaped_in_html_only(make_delivery: DeliveryFactory) -> None:
    msg = compose_email(make_delivery("update", title="<script>alert(1)</script>"), LINKS, SENDER)
    html = body(msg, "html")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" in body(msg, "plain")


async def test_script_in_title_arrives_escaped(
    smtp_sink: SmtpSink, make_delivery: DeliveryFactory
) -> None:
    async with EmailNotifier(settings(smtp_sink)) as notifier:
        await notifier.send(make_delivery("update", title="<script>alert(1)</script>"))
    [msg] = smtp_sink.wait_for(1)
    assert "<script>" not in body(msg, "html")
    assert "&lt;script&gt;" in body(msg, "html")


@pytest.mark.parametrize(
    ("code", "stage", "error"),
    [
        (421, "RCPT", TransientDeliveryError),
        (450, "RCPT", TransientDeliveryError),
        (451, "DATA", TransientDeliveryError),
        (550, "RCPT", PermanentDeliveryError),
        (554, "DATA", PermanentDeliveryError),
    ],
)
async def test_smtp_codes_are_classified(
    code: int,
    stage: str,
    error: type[Exception],
    smtp_sink: SmtpSink,
    make_delivery: DeliveryFactory,
) -> None:
    smtp_sink.fail_next(code=code, times=1, stage=stage)  # type: ignore[arg-type]
    async with EmailNotifier(settings(smtp_sink)) as notifier:
        with pytest.raises(error) as info:
            await notifier.send(make_delivery())
        assert str(code) in str(info.value)
        if isinstance(info.value, PermanentDeliveryError):
            assert info.value.reason == "rejected"
        # The pool is usable again after the failure.
        await notifier.send(make_delivery())
    assert len(smtp_sink.wait_for(1)) == 1


async def test_connection_refused_is_transient(make_delivery: DeliveryFactory) -> None:
    refused = SmtpSettings(host="127.0.0.1", port=free_port(), tls="none", timeout=5)
    async with EmailNotifier(refused) as notifier:
        with pytest.raises(TransientDeliveryError):
            await notifier.send(make_delivery())


async def test_wrong_target_is_permanent(
    make_delivery: DeliveryFactory, smtp_sink: SmtpSink
) -> None:
    async with EmailNotifier(settings(smtp_sink)) as notifier:
        with pytest.raises(PermanentDeliveryError):
            await notifier.send(make_delivery(channel="slack"))


async def test_pool_reuses_connections(smtp_sink: SmtpSink, make_delivery: DeliveryFactory) -> None:
    deliveries = [make_delivery(address=f"p{i}@example.org") for i in range(20)]
    async with EmailNotifier(settings(smtp_sink, pool_size=2)) as notifier:
        results = await asyncio.gather(*(notifier.send(d) for d in deliveries))
    assert len(smtp_sink.wait_for(20)) == 20
    assert len({r.provider_id for r in results}) == 20
    assert 1 <= smtp_sink.connections <= 2


async def test_pool_survives_server_dropping_connections(
    smtp_sink: SmtpSink, make_delivery: DeliveryFactory
) -> None:
    async with EmailNotifier(settings(smtp_sink, pool_size=1)) as notifier:
        await notifier.send(make_delivery(address="a@example.org"))
        smtp_sink.drop_connections()
        await notifier.send(make_delivery(address="b@example.org"))
    assert [m.rcpt_tos for m in smtp_sink.wait_for(2)] == [("a@example.org",), ("b@example.org",)]
    assert smtp_sink.connections == 2


def test_event_part_is_rendered_once_per_event(make_delivery: DeliveryFactory) -> None:
    event = make_event("meeting", event_id="01J00000000000000000CACHE1")
    first = render_bodies(make_delivery(event=event, address="a@example.org"), Links())
    second = render_bodies(make_delivery(event=event, address="b@example.org"), LINKS)
    assert first[1].split("You receive this")[0] == second[1].split("You receive this")[0]
    assert "hub.example.org/u/tok" in second[1]
    assert "hub.example.org" not in first[1]


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("plain title", "plain title"),
        ("a\r\nBcc: x@y", "a Bcc: x@y"),
        ("a\x85b\u2028c\u2029d\x0be", "a b c d e"),
        ("=?utf-8?q?x?=", "= ?utf-8?q?x?="),
        ("==??", "== ??"),
        ("  many   spaces\t", "many spaces"),
    ],
)
def test_header_text(raw: str, safe: str) -> None:
    assert header_text(raw) == safe
    assert "=?" not in header_text(raw)


def test_subject_line_is_clipped() -> None:
    event = make_event("update", title="x" * 200)
    subject = subject_line(event)
    assert subject.startswith("[somerville] xxx")
    assert len(subject) == 180
    assert subject.endswith("…")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPACTBUS_SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("IMPACTBUS_SMTP_PASSWORD", "hunter2")
    monkeypatch.setenv("IMPACTBUS_SMTP_TLS", "tls")
    monkeypatch.setenv("IMPACTBUS_EMAIL_FROM", "Hub <hub@example.org>")
    s = SmtpSettings()
    assert s.configured
    assert (s.host, s.port, s.tls, s.pool_size) == ("smtp.example.org", 587, "tls", 8)
    assert s.from_address == "Hub <hub@example.org>"
    assert "hunter2" not in repr(s)
    monkeypatch.delenv("IMPACTBUS_SMTP_HOST")
    assert not SmtpSettings().configured


@pytest.mark.parametrize(
    ("kind", "name", "data"),
    [
        ("update", "Ann Lee", {"title": "Market opens", "body": "Line one\n.starts with a dot\n"}),
        ("milestone", "Ann Lee", {"title": "Café opens \u2013 finally", "status": "reached"}),
        ("metric", None, {"indicator": "BMI", "value": 17.5, "baseline": 20.0, "target": 15.0}),
        ("update", "Zoë Ångström", {"title": "Non-ASCII name takes the MIME path"}),
        ("update", "Ann", {"title": "x" * 200, "body": "long " * 500}),
    ],
)
def test_wire_bytes_parse_to_the_same_message_as_compose_email(
    kind: str, name: str | None, data: dict[str, object]
) -> None:
    from email import message_from_bytes, policy

    from notifiers.email import email_parts, wire_bytes

    delivery = build_delivery(kind, name=name, **data)
    links = Links(
        preferences="https://hub.example/preferences/t",
        unsubscribe="https://hub.example/unsubscribe/t",
    )
    now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    raw = wire_bytes(email_parts(delivery, links, SENDER, now=now), delivery.job_id)
    reference = compose_email(delivery, links, SENDER, now=now)
    if raw is None:
        assert not (name or "").isascii()  # only non-ASCII addresses take the MIME path
        return
    fast = message_from_bytes(raw, policy=policy.default)
    slow = message_from_bytes(reference.as_bytes(), policy=policy.default)
    for header in (
        "Subject",
        "From",
        "To",
        "Message-ID",
        "Date",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "List-Id",
    ):
        assert str(fast[header]) == str(slow[header]), header
    for subtype in ("plain", "html"):
        a, b = fast.get_body((subtype,)), slow.get_body((subtype,))
        assert a is not None
        assert b is not None
        assert a.get_content().replace("\r\n", "\n") == b.get_content().replace("\r\n", "\n")
