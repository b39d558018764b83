"""The view model of one recipient's digest, built from the events waiting for them.

Pure: no I/O and no clock (``now`` is an argument). :func:`build_digest` groups events by
initiative, then by kind, and computes what a reader needs at a glance: each indicator's
latest value, its change since the previous digest, progress toward its target and words
for what needs attention (target reached, wrong way, stale); milestones that changed or
fall due soon; meetings with the reader's own action items flagged; update excerpts.
:func:`render_digest_email` turns the view into (subject, text, html) with the
``digest/email.*.j2`` templates; ``services.digest.slack`` turns it into Block Kit.

"Wrong way" means a value moved against its direction of good (``direction``) since the
previous digest, or since the baseline when there was none. Judging by the direction
rather than by distance to the target keeps an indicator that keeps beating its target
from being flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal, cast
from zoneinfo import ZoneInfo

from markupsafe import Markup

from notifiers.render import environment, render
from notifiers.text import bar, change, local_time, progress, with_unit, zone
from schemas.bounds import ratio
from schemas.directory import Recipient
from schemas.errors import InvalidInputError
from schemas.events import Event, MeetingNotes, MetricUpdate, Milestone
from services.digest.schedule import parse_digest, period_key

STALE_AFTER: Final = timedelta(days=30)
UPCOMING_DAYS: Final = 14
EXCERPT_LINES: Final = 3
EXCERPT_CHARS: Final = 280
BAR_WIDTH: Final = 10
PART_CACHE: Final = 8192
VIEW_CACHE: Final = 4096
"""Entry views kept per (event, context); an event's views share its lifetime in here."""
"""Rendered digest entries kept for reuse (a few KiB each)."""

MilestoneStatus = Literal["planned", "reached", "missed", "at-risk"]
_ATTENTION_ORDER: Final[dict[str, int]] = {"missed": 0, "at-risk": 1, "reached": 2, "planned": 3}


@lru_cache(maxsize=4096)
def excerpt(text: str, lines: int = EXCERPT_LINES, chars: int = EXCERPT_CHARS) -> tuple[str, bool]:
    """The first ``lines`` non-blank lines of ``text``, at most ``chars`` characters.

    Cached: the same notes and bodies come back for every recipient of an event.

    Returns:
        The excerpt and whether anything was cut off.
    """
    all_lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    kept = "\n".join(all_lines[:lines])
    cut = len(all_lines) > lines
    if len(kept) > chars:
        kept, cut = kept[: chars - 1].rsplit(" ", 1)[0].rstrip() + "…", True
    elif cut:
        kept += " …"
    return kept, cut


# ``field(compare=False)`` marks what the entry templates (``digest/parts.*.j2``) never
# show: left out of equality, entries that render the same are one entry of the render
# cache (:func:`_part`). tests/services/test_digest_render.py keeps the templates from
# reading those fields.


@dataclass(frozen=True, slots=True)
class MetricView:
    """One indicator (initiative + topic) as the digest shows it."""

    key: str = field(compare=False)
    initiative: str = field(compare=False)
    topic: str = field(compare=False)
    indicator: str
    value: float
    unit: str | None
    period: str | None
    baseline: float | None
    target: float | None
    direction: Literal["increase", "decrease"]
    previous: float | None = field(compare=False)
    change: float | None
    change_pct: float | None
    progress: float | None
    target_reached: bool
    wrong_way: bool
    stale: bool
    updated_at: datetime = field(compare=False)
    updates: int = field(compare=False)
    note: str | None

    @property
    def flags(self) -> tuple[str, ...]:
        """The flags as words, e.g. ``("target reached",)``."""
        pairs = (
            ("target reached", self.target_reached),
            ("wrong way", self.wrong_way),
            ("stale", self.stale),
        )
        return tuple(word for word, on in pairs if on)

    @property
    def progress_pct(self) -> int | None:
        """Progress in whole percent, rounded down, 100 only when the target is reached."""
        return progress(self.value, self.baseline, self.target, self.direction)

    @property
    def bar(self) -> str:
        """A text progress bar such as ``[######----] 60%`` (empty without progress)."""
        pct = self.progress_pct
        return "" if pct is None else f"{bar(pct, BAR_WIDTH)} {pct}%"

    @property
    def value_text(self) -> str:
        """The value with its unit: ``17%``, ``12.5 kg``."""
        return with_unit(self.value, self.unit)

    @property
    def change_text(self) -> str:
        """``+2 (+13.33%) since last digest``, or ``""`` without a previous value."""
        if self.change is None:
            return ""
        pct = "" if self.change_pct is None else f" ({change(self.change_pct, '%')})"
        return f"{change(self.change, self.unit)}{pct} since last digest"

    @property
    def target_text(self) -> str:
        """``baseline 20 → target 15 (lower is better)``, parts present only if known."""
        parts = [] if self.baseline is None else [f"baseline {with_unit(self.baseline, self.unit)}"]
        if self.target is not None:
            parts.append(f"target {with_unit(self.target, self.unit)}")
        good = "lower is better" if self.direction == "decrease" else "higher is better"
        return f"{' → '.join(parts)} ({good})" if parts else good


@dataclass(frozen=True, slots=True)
class MilestoneView:
    """A milestone's latest status. ``upcoming``: planned and due within 14 days."""

    initiative: str = field(compare=False)
    topic: str = field(compare=False)
    title: str
    status: MilestoneStatus
    due: date | None
    overdue: bool
    upcoming: bool
    note: str | None

    @property
    def label(self) -> str:
        """The status as a word for the reader."""
        if self.overdue:
            return "overdue"
        return "upcoming" if self.upcoming else self.status.replace("-", " ")


@dataclass(frozen=True, slots=True)
class ActionItemView:
    """An action item; ``mine`` when its owner is the recipient."""

    task: str
    owner: str
    due: date | None
    mine: bool
    overdue: bool
    meeting: str
    initiative: str


@dataclass(frozen=True, slots=True)
class MeetingView:
    """A meeting's notes, action items sorted overdue first, then by due date.

    ``held_at`` orders meetings; ``held_text`` says when the meeting was held in the
    recipient's time zone ``zone`` (``23 Nov 2026, 14:00 (Europe/Paris)``), in UTC for a stored time
    at the end of the calendar that has no value there, or an en dash.
    """

    initiative: str = field(compare=False)
    topic: str = field(compare=False)
    title: str
    held_at: datetime = field(compare=False)
    held_text: str
    zone: str
    summary: str
    decisions: tuple[str, ...]
    action_items: tuple[ActionItemView, ...]
    attendees: int


@dataclass(frozen=True, slots=True)
class UpdateView:
    """An update: title, the first lines of its body and its link."""

    initiative: str = field(compare=False)
    topic: str = field(compare=False)
    title: str
    excerpt: str
    truncated: bool
    url: str | None
    time: datetime = field(compare=False)


@dataclass(frozen=True, slots=True)
class InitiativeDigest:
    """Everything of one initiative, by kind."""

    initiative: str
    metrics: tuple[MetricView, ...] = ()
    milestones: tuple[MilestoneView, ...] = ()
    meetings: tuple[MeetingView, ...] = ()
    updates: tuple[UpdateView, ...] = ()

    @property
    def count(self) -> int:
        """How many entries it shows."""
        return len(self.metrics) + len(self.milestones) + len(self.meetings) + len(self.updates)


@dataclass(frozen=True, slots=True)
class DigestView:
    """One recipient's digest. Store ``next_values`` as the next digest's ``previous``."""

    recipient_id: str
    recipient_name: str | None
    timezone: str
    frequency: Literal["daily", "weekly"]
    period: str
    generated_at: datetime
    event_count: int
    initiatives: tuple[InitiativeDigest, ...]
    my_action_items: tuple[ActionItemView, ...]
    next_values: dict[str, float]

    @property
    def is_empty(self) -> bool:
        """Whether there is nothing to show."""
        return not self.initiatives

    @property
    def generated_text(self) -> str:
        """When it was made, in the recipient's zone: ``23 Nov 2026, 08:00 (Europe/Paris)``."""
        return local_time(self.generated_at, zone(self.timezone))


def build_digest(
    recipient: Recipient,
    events: Iterable[Event],
    previous: Mapping[str, float],
    now: datetime,
    *,
    stale_after: timedelta = STALE_AFTER,
) -> DigestView:
    """Build the digest view of ``events`` for ``recipient``.

    Args:
        recipient: who the digest is for (time zone, name, schedule).
        events: the events waiting for them, in any order; duplicates are ignored.
        previous: indicator values of their previous digest, by ``initiative/topic``.
        now: the current time (aware); dates such as "overdue" are in their time zone.
        stale_after: an indicator whose latest value is older than this is ``stale``.

    Raises:
        InvalidInputError: ``now`` is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInputError("now must be timezone-aware")
    zone = ZoneInfo(recipient.timezone)
    me = {s.strip().casefold() for s in (recipient.name, recipient.id, recipient.organisation) if s}
    build = _Builder(previous, now, now.astimezone(zone).date(), zone, frozenset(me), stale_after)
    # Oldest first, so a later event overwrites an earlier one of the same topic.
    ordered = sorted({e.key: e for e in events}.values(), key=lambda e: e.time)
    by_initiative: dict[str, list[Event]] = {}
    for event in ordered:
        by_initiative.setdefault(event.initiative, []).append(event)
    built = (build.section(name, evs) for name, evs in sorted(by_initiative.items()))
    sections = tuple(s for s in built if s.count)  # far-off planned milestones show nothing
    mine = (a for s in sections for m in s.meetings for a in m.action_items if a.mine)
    spec = parse_digest(recipient.digest)
    return DigestView(
        recipient_id=recipient.id,
        recipient_name=recipient.name,
        timezone=recipient.timezone,
        frequency=spec.frequency,
        period=period_key(spec, recipient.timezone, now),
        generated_at=now.astimezone(zone),
        event_count=len(ordered),
        initiatives=sections,
        my_action_items=tuple(sorted(mine, key=_action_order)),
        next_values={**previous, **{m.key: m.value for s in sections for m in s.metrics}},
    )


@dataclass(frozen=True, slots=True)
class _Builder:
    previous: Mapping[str, float]
    now: datetime
    today: date
    zone: ZoneInfo
    me: frozenset[str]
    stale_after: timedelta

    def section(self, initiative: str, events: list[Event]) -> InitiativeDigest:
        metrics: dict[str, list[Event]] = {}
        milestones: dict[str, MilestoneView] = {}
        meetings: list[MeetingView] = []
        updates: list[UpdateView] = []
        for e in events:
            data = e.data
            if isinstance(data, MetricUpdate):
                metrics.setdefault(e.topic, []).append(e)
            elif isinstance(data, Milestone):
                milestones[e.topic] = self.milestone(e)
            elif isinstance(data, MeetingNotes):
                meetings.append(self.meeting(e, data))
            else:
                updates.append(self.update(e))
        shown = (m for m in milestones.values() if m.status != "planned" or m.overdue or m.upcoming)
        metric_views = (self.metric(evs[-1], len(evs)) for evs in metrics.values())
        return InitiativeDigest(
            initiative=initiative,
            metrics=tuple(sorted(metric_views, key=lambda m: (m.indicator.casefold(), m.topic))),
            milestones=tuple(sorted(shown, key=_milestone_order)),
            meetings=tuple(sorted(meetings, key=lambda m: m.held_at, reverse=True)),
            updates=tuple(sorted(updates, key=lambda u: u.time, reverse=True)),
        )

    # The views of an event are made once per distinct context and shared: the events
    # themselves are shared between recipients (see services.digest.service.read_item), and a
    # view depends only on the event and the arguments of its maker below.

    def metric(self, event: Event, updates: int) -> MetricView:
        prev = self.previous.get(f"{event.initiative}/{event.topic}")
        stale = self.now - event.time > self.stale_after
        return _metric_view(_Same(event), updates, prev, stale)

    def milestone(self, event: Event) -> MilestoneView:
        return _milestone_view(_Same(event), self.today)

    def meeting(self, event: Event, data: MeetingNotes) -> MeetingView:
        mine = tuple(a.owner.strip().casefold() in self.me for a in data.action_items)
        return _meeting_view(_Same(event), self.zone, mine, self.today)

    def update(self, event: Event) -> UpdateView:
        return _update_view(_Same(event))


class _Same:
    """An object as a cache key, by identity: nothing of it is hashed.

    The key keeps the object alive while it is cached, so its id is not reused.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def _data(ref: _Same) -> tuple[Event, Any]:
    event = cast(Event, ref.obj)
    return event, event.data


@lru_cache(maxsize=VIEW_CACHE)
def _metric_view(ref: _Same, updates: int, prev: float | None, stale: bool) -> MetricView:
    event, data = _data(ref)
    assert isinstance(data, MetricUpdate)
    key = f"{event.initiative}/{event.topic}"
    value, target, baseline = data.value, data.target, data.baseline
    better = 1.0 if data.direction == "increase" else -1.0
    reached = target is not None and (value - target) * better >= 0
    progress: float | None = None
    if target is not None and baseline is not None:
        # (value - baseline) / (target - baseline) is right for both directions:
        # baseline 20 -> target 15, value 17 gives -3 / -5 = 60 %.
        # ratio(): spans of stored figures (1e308 from -1e308) overflow to inf, and
        # inf / inf is no share at all: no progress shown rather than a NaN bar.
        span = target - baseline
        raw = ratio(value - baseline, span) if span else float(reached)
        progress = None if raw is None else min(max(raw, 0.0), 1.0)
    reference = prev if prev is not None else baseline
    return MetricView(
        key=key,
        initiative=event.initiative,
        topic=event.topic,
        indicator=data.indicator,
        value=value,
        unit=data.unit,
        period=data.period,
        baseline=baseline,
        target=target,
        direction=data.direction,
        previous=prev,
        change=None if prev is None else value - prev,
        change_pct=None if prev is None else _percent(ratio(value - prev, abs(prev))),
        progress=progress,
        target_reached=reached,
        wrong_way=reference is not None and (value - reference) * better < 0,
        stale=stale,
        updated_at=event.time,
        updates=updates,
        note=excerpt(data.note)[0] if data.note else None,
    )


def _percent(share: float | None) -> float | None:
    return None if share is None else share * 100


@lru_cache(maxsize=VIEW_CACHE)
def _milestone_view(ref: _Same, today: date) -> MilestoneView:
    event, data = _data(ref)
    assert isinstance(data, Milestone)
    due = data.due
    planned = data.status == "planned" and due is not None
    overdue = planned and due is not None and due < today
    soon = planned and due is not None and today <= due <= today + timedelta(UPCOMING_DAYS)
    note = excerpt(data.note)[0] if data.note else None
    return MilestoneView(
        event.initiative, event.topic, data.title, data.status, due, overdue, soon, note
    )


@lru_cache(maxsize=VIEW_CACHE)
def _meeting_view(ref: _Same, zone: ZoneInfo, mine: tuple[bool, ...], today: date) -> MeetingView:
    event, data = _data(ref)
    assert isinstance(data, MeetingNotes)
    items = (
        ActionItemView(
            task=a.task,
            owner=a.owner,
            due=a.due,
            mine=is_mine,
            overdue=a.due is not None and a.due < today,
            meeting=data.title,
            initiative=event.initiative,
        )
        for a, is_mine in zip(data.action_items, mine, strict=True)
    )
    return MeetingView(
        initiative=event.initiative,
        topic=event.topic,
        title=data.title,
        held_at=data.held_at,
        held_text=local_time(data.held_at, zone),
        zone=zone.key,
        summary=excerpt(data.summary)[0],
        decisions=tuple(excerpt(d)[0] for d in data.decisions),
        action_items=tuple(sorted(items, key=_action_order)),
        attendees=len(data.attendees),
    )


@lru_cache(maxsize=VIEW_CACHE)
def _update_view(ref: _Same) -> UpdateView:
    event, data = _data(ref)
    text, cut = excerpt(data.body)
    url = str(data.url) if data.url else None
    return UpdateView(event.initiative, event.topic, data.title, text, cut, url, event.time)


def _milestone_order(m: MilestoneView) -> tuple[int, int, date, str]:
    # Missed, at risk, reached (overdue planned ones count as missed); then upcoming by due.
    rank = _ATTENTION_ORDER["missed" if m.overdue else m.status]
    return (int(m.upcoming), rank, m.due or date.max, m.title.casefold())


def _action_order(a: ActionItemView) -> tuple[bool, date, bool, str]:
    return (not a.overdue, a.due or date.max, not a.mine, a.task.casefold())


def render_digest_email(view: DigestView, links_preferences: str | None) -> tuple[str, str, str]:
    """Render the digest as an email.

    Args:
        view: the digest.
        links_preferences: URL of the recipient's preference centre, shown in the footer.

    Returns:
        ``(subject, text, html)``: the text and HTML parts of one multipart message.

    Raises:
        InvalidInputError: ``links_preferences`` is not an http(s) URL.
    """
    if links_preferences is not None and not links_preferences.startswith(("https://", "http://")):
        raise InvalidInputError(f"preferences link {links_preferences!r} is not an http(s) URL")
    subject = digest_subject_line(view)

    context = {"view": view, "subject": subject, "preferences_url": links_preferences}
    return (
        subject,
        render("digest/email.txt.j2", **context, **_entry_parts("text", view, str)),
        render("digest/email.html.j2", **context, **_entry_parts("html", view, Markup)),
    )


_KINDS: Final = (
    ("metric", "metrics"),
    ("milestone", "milestones"),
    ("meeting", "meetings"),
    ("update", "updates"),
)


def _entry_parts(fmt: str, view: DigestView, wrap: Callable[[str], str]) -> dict[str, Any]:
    """The rendered entries of ``view`` for the email templates, joined per list.

    ``yours``: the recipient's action items (HTML only: the text template lists them
    itself); ``sections[i][kind]``: the entries of kind ``kind`` (``metric``, ...) of
    ``view.initiatives[i]``. Joined here rather than through
    a template function call per list (jinja's call machinery costs more than the join).
    HTML parts are ``Markup`` already (escaped when rendered): joined without re-escaping.
    """
    sections = [
        {
            kind: wrap("".join([_part(fmt, kind, e) for e in getattr(s, attr)]))
            for kind, attr in _KINDS
        }
        for s in view.initiatives
    ]
    if fmt != "html":
        return {"sections": sections}
    yours = wrap("".join([_shown(fmt, "your_action", a) for a in view.my_action_items]))
    return {"sections": sections, "yours": yours}


_PARTS: Final = {"text": "digest/parts.txt.j2", "html": "digest/parts.html.j2"}


def _shown(fmt: str, kind: str, entry: object) -> str:
    """:func:`_part`, found first by the entry's identity.

    Entry views are shared per (event, context) (see ``_metric_view`` and co.), so the
    same view object comes back digest after digest; hashing it by identity skips hashing
    its fields, which costs more than the lookup itself.
    """
    return _part_of(fmt, kind, _Same(entry))


@lru_cache(maxsize=PART_CACHE)
def _part_of(fmt: str, kind: str, ref: _Same) -> str:
    return _part(fmt, kind, ref.obj)


@lru_cache(maxsize=PART_CACHE)
def _part(fmt: str, kind: str, entry: object) -> str:
    """One entry rendered by its macro in ``digest/parts.<fmt>.j2`` (``metric``, ...).

    Recipients who follow the same initiative see the same entries, so each distinct entry
    is rendered once and reused: the views are frozen dataclasses whose equality covers
    every field a template reads (and no other). The HTML part is ``Markup``, escaped
    once, when it was rendered.
    """
    macro = getattr(environment().get_template(_PARTS[fmt]).module, kind)
    return cast(str, macro(entry))


def digest_subject_line(view: DigestView) -> str:
    """The digest's subject line (the email's subject, the Slack digest's too)."""
    kind = "Daily" if view.frequency == "daily" else "Weekly"
    if view.is_empty:
        return f"{kind} digest {view.period}: nothing new"
    n, groups = view.event_count, len(view.initiatives)
    subject = (
        f"{kind} digest {view.period}: {n} update{'s' * (n != 1)}"
        f" from {groups} initiative{'s' * (groups != 1)}"
    )
    overdue = sum(a.overdue for a in view.my_action_items)
    if overdue:
        subject += f" - {overdue} of your action items overdue"
    return subject
