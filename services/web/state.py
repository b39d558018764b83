"""What the web pages share, handed to them as a FastAPI dependency.

The pages run inside the API app (``services.api.app`` includes :data:`services.web.router`)
and reuse its :class:`~services.api.state.ApiState`: the same bus, directory and token
authenticator, opened in the API's lifespan. On top, :class:`WebState` holds the link
signer, the hub and web settings (the hub's time zone for the shared pages among them);
it is built on the first request and kept on ``app.state.web``.

The settings come from the app, which has them from the process edge: the hub settings
(``state.hub``: the signer needs the data dir, for a generated key), the web settings
(``state.web_settings``) and the channels' settings (``state.channels``: which channels go
to the dev outbox). Nothing here reads the environment.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Final

from fastapi import Depends, Request
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from notifiers.registry import ChannelSettings
from schemas.events import Event, parse_event
from schemas.subjects import EVENT_KINDS, event_subject
from services.api.state import api_state
from services.bus import EVENTS, Bus
from services.bus.streams import last_data, stored_subjects
from services.config import HubSettings
from services.directory.auth import Authenticator
from services.directory.links import LinkSigner
from services.directory.records import Directory
from services.web.throttle import LoginThrottle
from services.web.words import EventHelpers, initiative_name, topic_label

LABEL_TTL_S: Final = 60.0


class WebSettings(BaseSettings):
    """``IMPACTBUS_WEB_*``, and the initiatives' display names (``IMPACTBUS_INITIATIVES``)."""

    model_config = SettingsConfigDict(env_prefix="IMPACTBUS_WEB_", env_file=".env", extra="ignore")

    public: bool = Field(
        True, description="initiative pages and Atom feeds readable without signing in"
    )
    session_hours: float = Field(8, gt=0, le=24 * 30, description="sign-in lasts this long")
    login_failures_per_min: float = Field(
        10, ge=0, description="failed sign-ins a minute per address and per token id; 0: off"
    )
    login_burst: float = Field(10, ge=1, description="failed sign-ins allowed at once")
    initiatives: dict[str, str] = Field(
        default_factory=dict,
        validation_alias="IMPACTBUS_INITIATIVES",
        description='JSON: {"somerville": "Shape Up Somerville"}',
    )


@dataclass
class WebState:
    """The web pages' connections and helpers."""

    bus: Bus
    directory: Directory
    auth: Authenticator
    signer: LinkSigner
    hub: HubSettings
    settings: WebSettings
    channels: ChannelSettings
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    _labels: dict[str, tuple[float, str | None]] = field(default_factory=dict)

    @cached_property
    def helpers(self) -> EventHelpers:
        """How the shared pages show events: times in the hub's zone (``IMPACTBUS_TIMEZONE``)."""
        return EventHelpers(zone=self.hub.zone)

    def name(self, initiative: str) -> str:
        """An initiative's display name."""
        return initiative_name(initiative, self.settings.initiatives)

    async def latest(self, subject: str) -> Event | None:
        """The newest event stored on ``subject`` (a concrete event subject), if any."""
        data = await last_data(self.bus, EVENTS, subject)
        if data is None:  # no such subject, or NATS is away
            return None
        try:
            return parse_event(data)
        except ValueError:
            return None

    async def topic_labels(self, patterns: list[str]) -> dict[str, str]:
        """Labels of the patterns that name one topic of one initiative, from their last event.

        ``impact.somerville.metric.bmi`` -> "Children's BMI". Cached for a minute.
        """
        now = asyncio.get_running_loop().time()
        wanted = [p for p in patterns if _single_topic(p)]
        for pattern in wanted:
            cached = self._labels.get(pattern)
            if cached is None or now - cached[0] > LABEL_TTL_S:
                self._labels[pattern] = (now, await self._label(pattern))
        return {p: label for p in wanted if (label := self._labels[p][1])}

    async def _label(self, pattern: str) -> str | None:
        _, initiative, kind, topic = pattern.split(".")
        kinds = EVENT_KINDS if kind == "*" else (kind,)
        for k in kinds:
            event = await self.latest(event_subject(initiative, k, topic))
            if event is not None:
                return topic_label(event)
        return None

    async def initiatives(self) -> list[str]:
        """Initiatives that have events in the stream (plus the configured ones), by id."""
        found = set(self.settings.initiatives)
        subjects = await stored_subjects(self.bus, EVENTS, "impact.>")
        if subjects is None:
            return sorted(found)
        for subject in subjects:
            parts = subject.split(".")
            if len(parts) == 4:
                found.add(parts[1])
        return sorted(found)


def _single_topic(pattern: str) -> bool:
    parts = pattern.split(".")
    return len(parts) == 4 and parts[1] not in ("*", ">") and parts[3] not in ("*", ">")


def web_state(request: Request) -> WebState:
    """The :class:`WebState` of the app serving ``request`` (built on first use)."""
    state: WebState | None = getattr(request.app.state, "web", None)
    if state is None:
        api = api_state(request)
        hub: HubSettings = request.app.state.hub
        settings: WebSettings = request.app.state.web_settings
        state = WebState(
            bus=api.bus,
            directory=api.directory,
            auth=api.auth,
            signer=LinkSigner.from_settings(hub),
            hub=hub,
            settings=settings,
            channels=request.app.state.channels,
            throttle=LoginThrottle(settings.login_failures_per_min, settings.login_burst),
        )
        request.app.state.web = state
    return state


Web = Annotated[WebState, Depends(web_state)]
