"""The webhook notifier against a real local HTTP receiver, plus its pure parts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from notifiers.base import Notifier, PermanentDeliveryError, TransientDeliveryError
from notifiers.settings import WebhookSettings
from notifiers.webhook import (
    SettingsSecretStore,
    WebhookNotifier,
    payload_for,
    retry_after_seconds,
    status_error,
)
from notifiers.webhook_signing import new_secret, sign, signature_header, verify
from schemas.delivery import Delivery, Rendered
from schemas.errors import InvalidInputError
from schemas.events import new_event, parse_event
from schemas.targets import WebhookTarget
from tests.fakes.webhook import WebhookSink

# The sink fixtures, here until tests/conftest.py offers them to every module.

NEW = new_secret()
OLD = new_secret()


def delivery_to(url: str) -> Delivery:
    event = new_event(
        "metric",
        "somerville",
        "bmi",
        {"indicator": "Children at a healthy weight", "value": 61.5, "unit": "%"},
        source="urn:test",
        event_id="ev-1",
    )
    return Delivery(event=event, recipient="ana", target=WebhookTarget(url=url))


def make_notifier(secret: str = NEW, timeout: float = 5) -> WebhookNotifier:
    return WebhookNotifier(WebhookSettings(allow_loopback=True, timeout=timeout, secret=secret))


def test_standard_webhooks_test_vector() -> None:
    # The example of the Standard Webhooks reference libraries.
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def test_signed_json_post(webhook_sink: WebhookSink) -> None:
    delivery = delivery_to(webhook_sink.url_for("/hooks/impact"))
    async with make_notifier() as notifier:
        assert isinstance(notifier, Notifier)
        result = await notifier.send(delivery)
    (request,) = webhook_sink.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/hooks/impact"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == delivery.job_id
    assert result.provider_id == delivery.job_id
    assert result.channel == "webhook"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert len(request.headers["webhook-signature"].split()) == 1
    verify([NEW], request.headers, request.body)


async def test_body_is_the_documented_json(webhook_sink: WebhookSink) -> None:
    delivery = delivery_to(webhook_sink.url_for())
    async with make_notifier() as notifier:
        await notifier.send(delivery)
    body = webhook_sink.wait_for(1)[0].json()
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "org.impactbus.metric"
    assert datetime.fromisoformat(body["timestamp"]) == delivery.event.time
    assert parse_event(json.dumps(body["data"])) == delivery.event
    assert body["data"]["data"]["indicator"] == "Children at a healthy weight"


async def test_rotation_sends_both_signatures(webhook_sink: WebhookSink) -> None:
    async with make_notifier(secret=f"{NEW}, {OLD}") as notifier:
        await notifier.send(delivery_to(webhook_sink.url_for()))
    request = webhook_sink.wait_for(1)[0]
    assert len(request.headers["webhook-signature"].split()) == 2
    verify([NEW], request.headers, request.body)  # receivers already on the new secret
    verify([OLD], request.headers, request.body)  # receivers still on the old one
    with pytest.raises(InvalidInputError):
        verify([new_secret()], request.headers, request.body)


async def test_webhook_id_is_stable_across_retries(webhook_sink: WebhookSink) -> None:
    delivery = delivery_to(webhook_sink.url_for())
    webhook_sink.respond_next(500)
    async with make_notifier() as notifier:
        with pytest.raises(TransientDeliveryError):
            await notifier.send(delivery)
        await notifier.send(delivery)
    first, second = webhook_sink.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.job_id
    assert first.body == second.body
    verify([NEW], second.headers, second.body)


async def test_one_shared_session_reuses_the_connection(webhook_sink: WebhookSink) -> None:
    async with make_notifier() as notifier:
        for _ in range(3):
            await notifier.send(delivery_to(webhook_sink.url_for()))
    assert len(webhook_sink.wait_for(3)) == 3
    assert webhook_sink.connections == 1


@pytest.mark.parametrize("status", [500, 502, 503, 408])
async def test_server_errors_are_transient(status: int, webhook_sink: WebhookSink) -> None:
    webhook_sink.respond_next(status)
    async with make_notifier() as notifier:
        with pytest.raises(TransientDeliveryError):
            await notifier.send(delivery_to(webhook_sink.url_for()))


async def test_429_honours_retry_after(webhook_sink: WebhookSink) -> None:
    webhook_sink.respond_next(429, headers={"Retry-After": "7"})
    async with make_notifier() as notifier:
        with pytest.raises(TransientDeliveryError) as caught:
            await notifier.send(delivery_to(webhook_sink.url_for()))
    assert caught.value.retry_after == 7


async def test_timeout_is_transient(webhook_sink: WebhookSink) -> None:
    webhook_sink.respond_next(200, delay=1.0)
    started = time.monotonic()
    async with make_notifier(timeout=0.3) as notifier:
        with pytest.raises(TransientDeliveryError, match=r"no response within 0\.3 s"):
            await notifier.send(delivery_to(webhook_sink.url_for()))
    assert time.monotonic() - started < 1.0
    assert len(webhook_sink.wait_for(1)) == 1


async def test_connection_refused_is_transient(
    webhook_sink_factory: Callable[[], WebhookSink],
) -> None:
    closed = webhook_sink_factory()
    url = closed.url_for()
    closed.close()  # nothing listens on that port any more
    async with make_notifier() as notifier:
        with pytest.raises(TransientDeliveryError, match="cannot connect"):
            await notifier.send(delivery_to(url))


async def test_redirect_is_permanent_and_not_followed(
    webhook_sink: WebhookSink, webhook_sink_factory: Callable[[], WebhookSink]
) -> None:
    elsewhere = webhook_sink_factory()
    webhook_sink.respond_next(301, headers={"Location": elsewhere.url_for("/stolen")})
    async with make_notifier() as notifier:
        with pytest.raises(PermanentDeliveryError) as caught:
            await notifier.send(delivery_to(webhook_sink.url_for()))
    assert caught.value.reason == "redirect"
    assert caught.value.disable_target is False
    assert len(webhook_sink.wait_for(1)) == 1
    assert elsewhere.connections == 0
    assert elsewhere.requests == []


async def test_410_disables_the_target(webhook_sink: WebhookSink) -> None:
    webhook_sink.respond_next(410)
    async with make_notifier() as notifier:
        with pytest.raises(PermanentDeliveryError) as caught:
            await notifier.send(delivery_to(webhook_sink.url_for()))
    assert caught.value.reason == "gone"
    assert caught.value.disable_target is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_permanent(status: int, webhook_sink: WebhookSink) -> None:
    webhook_sink.respond_next(status)
    async with make_notifier() as notifier:
        with pytest.raises(PermanentDeliveryError) as caught:
            await notifier.send(delivery_to(webhook_sink.url_for()))
    assert caught.value.disable_target is False


async def test_no_secret_is_permanent_and_sends_nothing(webhook_sink: WebhookSink) -> None:
    async with make_notifier(secret="") as notifier:
        with pytest.raises(PermanentDeliveryError) as caught:
            await notifier.send(delivery_to(webhook_sink.url_for()))
    assert caught.value.reason == "no-secret"
    assert webhook_sink.connections == 0


@pytest.mark.parametrize(
    ("status", "expected", "reason", "disable"),
    [
        (200, None, None, None),
        (204, None, None, None),
        (301, PermanentDeliveryError, "redirect", False),
        (302, PermanentDeliveryError, "redirect", False),
        (308, PermanentDeliveryError, "redirect", False),
        (400, PermanentDeliveryError, "rejected", False),
        (404, PermanentDeliveryError, "rejected", False),
        (408, TransientDeliveryError, "exhausted", None),
        (410, PermanentDeliveryError, "gone", True),
        (429, TransientDeliveryError, "exhausted", None),
        (500, TransientDeliveryError, "exhausted", None),
        (503, TransientDeliveryError, "exhausted", None),
    ],
)
def test_status_table(
    status: int, expected: type[Exception] | None, reason: str | None, disable: bool | None
) -> None:
    error = status_error(status)
    if expected is None:
        assert error is None
        return
    assert type(error) is expected
    assert error.reason == reason
    if disable is not None:
        assert isinstance(error, PermanentDeliveryError)
        assert error.disable_target is disable


NOW = datetime(2026, 10, 1, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("Thu, 01 Oct 2026 09:00:30 GMT", 30.0),
        ("Thu, 01 Oct 2026 08:59:00 GMT", 0.0),  # in the past: retry now
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_verify_refuses_tampering_and_stale_timestamps() -> None:
    body = b'{"type":"org.impactbus.metric"}'
    headers = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": "1000",
        "Webhook-Signature": signature_header([NEW], "msg_1", 1000, body),
    }
    verify([NEW], headers, body, now=1000)
    verify([NEW], headers, body, now=1299)
    with pytest.raises(InvalidInputError, match="tolerance"):
        verify([NEW], headers, body, now=1301)
    with pytest.raises(InvalidInputError, match="no webhook-signature"):
        verify([NEW], headers, body + b" ", now=1000)
    with pytest.raises(InvalidInputError, match="no webhook-signature"):
        verify([NEW], {**headers, "Webhook-Id": "msg_2"}, body, now=1000)
    with pytest.raises(InvalidInputError, match="missing"):
        verify([NEW], {"webhook-id": "msg_1"}, body, now=1000)


def test_digest_payload() -> None:
    first = delivery_to("https://hooks.example.org/x")
    later = new_event("update", "somerville", "bmi", {"title": "Second"})
    digest = Delivery(
        event=later,
        recipient="ana",
        target=first.target,
        digest_period="2026-10-01",
        rendered=Rendered(subject="Daily digest", text="2 updates: First, Second"),
    )
    payload = json.loads(payload_for(digest).model_dump_json())
    assert payload["type"] == "org.impactbus.digest"
    assert payload["data"] == {
        "period": "2026-10-01",
        "subject": "Daily digest",
        "text": "2 updates: First, Second",
    }


async def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPACTBUS_WEBHOOK_SECRET", f"{NEW},{OLD}")
    monkeypatch.setenv("IMPACTBUS_WEBHOOK_TIMEOUT", "2.5")
    settings = WebhookSettings()
    assert settings.timeout == 2.5
    assert settings.allow_loopback is False
    assert settings.secrets == [NEW, OLD]
    assert NEW not in repr(settings)
    assert await SettingsSecretStore(settings).get("webhook:https://x.example/") == [NEW, OLD]


@pytest.mark.parametrize("secret", ["not-whsec", "whsec_!!!", "whsec_c2hvcnQ="])
def test_malformed_secrets_are_refused_at_startup(secret: str) -> None:
    with pytest.raises(ValidationError):
        WebhookSettings(secret=secret)
