"""``impactbus demo``: the hub on its embedded defaults, filled with a story.

The story (``services/runtime/story.yaml``) is data, not code: two initiatives, their
recipients with their subscriptions, and a few weeks of events. :func:`load_demo` reads
it into a running hub through the same paths as everything else (the directory for
recipients and subscriptions, :func:`~services.pipeline.ingest.publish_events` for events), so
the router delivers the events to the dev outbox and the digests as it would any others.

Times in the story are relative to loading (``-21d 09:30``, ``due: +12d``) so the demo
always shows "the last few weeks"; events keep those times as their CloudEvents
``time``. Event ids are fixed (``demo-<initiative>-<n>``): loading twice into the same
hub publishes nothing the second time.

Errors: :class:`~schemas.errors.InvalidInputError` for a story that does not validate
(the message names the entry and field).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import BusUnavailableError, ImpactbusError, InvalidInputError
from schemas.events import Event, describe, new_event
from schemas.subjects import EventKind
from schemas.targets import Channel
from schemas.text import Line, Token
from services.bus import EVENTS, Bus
from services.bus.streams import last_data
from services.directory.records import Directory
from services.pipeline.ingest import publish_events

if TYPE_CHECKING:
    from services.config import Runtime

STORY: Final = Path(__file__).parent / "story.yaml"
SOURCE: Final = "urn:impactbus:demo"
_WHEN: Final = re.compile(r"^(?P<days>[+-]\d{1,4})d(?: (?P<hh>[01]\d|2[0-3]):(?P<mm>[0-5]\d))?$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoryInitiative(_Model):
    """An initiative: its display name and the time zone its story times are in."""

    name: Line
    timezone: str = "UTC"


class StorySubscription(_Model):
    """One subscription of a story recipient."""

    pattern: str
    channel: Channel
    mode: Literal["immediate", "digest"] = "immediate"


class StoryRecipient(_Model):
    """A recipient (the fields of :class:`~schemas.directory.Recipient`) and their subscriptions."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: Token
    subscriptions: list[StorySubscription] = Field(default_factory=list)


class StoryEvent(_Model):
    """One event: when (relative), where, what."""

    when: Annotated[str, Field(pattern=_WHEN.pattern)]
    initiative: Token
    kind: EventKind
    topic: Token
    data: dict[str, Any]


class Story(_Model):
    """The whole story file."""

    initiatives: dict[str, StoryInitiative]
    recipients: list[StoryRecipient] = Field(default_factory=list)
    events: list[StoryEvent] = Field(default_factory=list)


@dataclass
class DemoResult:
    """What :func:`load_demo` put into the hub."""

    names: dict[str, str]
    recipients: list[str] = field(default_factory=list)
    subscriptions: int = 0
    events: int = 0
    already_loaded: bool = False


def read_story(path: Path) -> Story:
    """Parse and validate a story file.

    Raises:
        InvalidInputError: unreadable YAML, or an entry that breaks the schema.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Story.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"story {path}: {exc}") from None
    except ValidationError as exc:
        raise InvalidInputError(f"story {path}: {describe(exc)}") from None


def resolve_time(when: str, tz: str, now: datetime) -> datetime:
    """``-21d 09:30`` in time zone ``tz`` -> an aware datetime relative to ``now``.

    Raises:
        InvalidInputError: not of that form.
    """
    match = _WHEN.fullmatch(when)
    if match is None:
        raise InvalidInputError(f"time {when!r}: use -21d 09:30")
    local = now.astimezone(ZoneInfo(tz)) + timedelta(days=int(match["days"]))
    if match["hh"] is not None:
        local = local.replace(hour=int(match["hh"]), minute=int(match["mm"]), second=0)
    return local.replace(microsecond=0)


def resolve_date(value: object, tz: str, now: datetime) -> object:
    """``+12d`` -> the date 12 days from today in ``tz``; anything else unchanged."""
    if isinstance(value, str) and _WHEN.fullmatch(value) and " " not in value:
        return resolve_time(value, tz, now).date()
    return value


def _data(event: StoryEvent, tz: str, now: datetime) -> dict[str, Any]:
    data = dict(event.data)
    if "due" in data:
        data["due"] = resolve_date(data["due"], tz, now)
    if isinstance(data.get("held_at"), str):
        data["held_at"] = resolve_time(data["held_at"], tz, now)
    if isinstance(data.get("action_items"), list):
        data["action_items"] = [
            {**item, "due": resolve_date(item["due"], tz, now)}
            if isinstance(item, dict) and "due" in item
            else item
            for item in data["action_items"]
        ]
    return data


def story_events(story: Story, now: datetime) -> list[Event]:
    """The story's events with absolute times, oldest first.

    Raises:
        InvalidInputError: an event breaks the schema (the message names which one).
    """
    events: list[Event] = []
    counters: dict[str, int] = {}
    for i, item in enumerate(story.events):
        meta = story.initiatives.get(item.initiative)
        if meta is None:
            raise InvalidInputError(f"events[{i}]: unknown initiative {item.initiative!r}")
        n = counters[item.initiative] = counters.get(item.initiative, 0) + 1
        try:
            events.append(
                new_event(
                    item.kind,
                    item.initiative,
                    item.topic,
                    _data(item, meta.timezone, now),
                    source=SOURCE,
                    event_id=f"demo-{item.initiative}-{n}",
                    time=resolve_time(item.when, meta.timezone, now),
                )
            )
        except InvalidInputError as exc:
            raise InvalidInputError(f"events[{i}]: {exc}") from None
    return sorted(events, key=lambda e: e.time)


async def _loaded_before(bus: Bus, events: list[Event]) -> bool:
    for subject in {e.nats_subject for e in events}:
        data = await last_data(bus, EVENTS, subject)
        if data and json.loads(data).get("source") == SOURCE:
            return True
    return False


async def load_demo(
    bus: Bus, story_path: Path = STORY, *, now: datetime | None = None
) -> DemoResult:
    """Put the story's recipients, subscriptions and events into the hub behind ``bus``.

    Args:
        bus: a connected bus with the topology declared.
        story_path: the story file.
        now: what the story's relative times are relative to (default: now).

    Raises:
        InvalidInputError: the story does not validate.
        BusUnavailableError: NATS did not answer.
    """
    story = read_story(story_path)
    events = story_events(story, now or datetime.now(UTC))
    directory = await Directory.open(bus)
    result = DemoResult(names={k: v.name for k, v in story.initiatives.items()})
    for i, person in enumerate(story.recipients):
        fields = {k: v for k, v in person.model_dump().items() if k != "subscriptions"}
        try:
            await directory.add_recipient(**fields)
            for sub in person.subscriptions:
                await directory.subscribe(person.id, sub.pattern, sub.channel, sub.mode)
                result.subscriptions += 1
        except InvalidInputError as exc:
            raise InvalidInputError(f"recipients[{i}] ({person.id}): {exc}") from None
        result.recipients.append(person.id)
    if await _loaded_before(bus, events):
        result.already_loaded = True
        return result
    await publish_events(bus, events)
    result.events = len(events)
    return result


def run_demo(story_path: Path = STORY) -> None:
    """Run the whole hub like ``impactbus up`` and load the story into it, until Ctrl-C.

    Prints where to look: the initiative pages, a preference centre, and a backbone token
    to sign in to the post form and the outbox with.
    """
    from services.bus import read_hub_file
    from services.config import load_hub_settings
    from services.runtime.hub import SERVICES, serve
    from services.runtime.logs import setup_logging

    try:
        hub = load_hub_settings()
        setup_logging(hub.log_format, hub.log_level)
        story = read_story(story_path)
    except InvalidInputError as exc:
        raise SystemExit(f"error: {exc}") from None
    if read_hub_file(hub.data_dir):
        raise SystemExit(f"error: a hub is already running in {hub.data_dir}: stop it first")
    # The web pages name initiatives from IMPACTBUS_INITIATIVES; the story knows the names.
    names = {k: v.name for k, v in story.initiatives.items()}
    os.environ.setdefault("IMPACTBUS_INITIATIVES", json.dumps(names))
    background: set[asyncio.Task[None]] = set()

    def ready(rt: Runtime) -> None:
        task = asyncio.get_running_loop().create_task(_fill(rt, story_path))
        background.add(task)
        task.add_done_callback(background.discard)

    try:
        asyncio.run(serve(list(SERVICES), hub=hub, ready=ready))
    except BusUnavailableError as exc:
        raise SystemExit(f"error: {exc}") from None
    except ImpactbusError as exc:
        raise SystemExit(f"error: {exc}") from None


async def _fill(rt: Runtime, story_path: Path) -> None:
    from services.directory.auth import create_token
    from services.directory.links import LinkSigner

    try:
        result = await load_demo(rt.bus, story_path)
        _, token = await create_token(
            rt.bus, "backbone", sorted(result.names), label="impactbus demo"
        )
    except ImpactbusError as exc:
        print(f"error: the demo could not be loaded: {exc}")
        rt.stop.set()
        return
    base = rt.hub.base_url
    signer = LinkSigner.from_settings(rt.hub)
    loaded = "already loaded" if result.already_loaded else f"{result.events} events"
    lines = [
        f"demo: {len(result.recipients)} recipients, {result.subscriptions} subscriptions,"
        f" {loaded}",
        *(f"  initiative  {base}/initiatives/{i}   ({n})" for i, n in result.names.items()),
        f"  outbox      {base}/outbox",
        f"  post form   {base}/post",
        f"  preferences {base}/preferences/{signer.preferences_token(result.recipients[0])}"
        f"   ({result.recipients[0]})",
        f"  sign in with this backbone token (shown once): {token}",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    run_demo()
