"""A digest as Slack Block Kit blocks: pure, no I/O.

Slack limits a message to 50 blocks and a section's text to 3000 characters. Entries of
one kind are packed into as few sections as fit; when the digest is longer than one
message allows, the last block says how many entries were left out (the email digest
has them all). Every string from an event or a recipient is escaped (``&``, ``<``,
``>``), so ``<!channel>`` or ``<@U123>`` in a title shows as text and never pings.
"""

from __future__ import annotations

import re
from typing import Final

from services.digest.view import ActionItemView, DigestView, InitiativeDigest

Block = dict[str, object]

MAX_BLOCKS: Final = 50
MAX_SECTION_CHARS: Final = 3000
MAX_HEADER_CHARS: Final = 150
MAX_OWN_ITEMS: Final = 10  # the reader's own action items listed up front; all are in email
ENTRY_CHARS: Final = 400  # one entry's raw text before escaping (5x growth still fits)
_PARTIAL_ENTITY: Final = re.compile(r"&[a-z]*$")


def escape(text: str) -> str:
    """Escape text for Slack mrkdwn: ``&``, ``<`` and ``>`` (Slack's own rule)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = ENTRY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_escaped(text: str, limit: int) -> str:
    """Shorten mrkdwn without cutting an entity (``&am``) or a ``<url|title>`` in two."""
    if len(text) <= limit:
        return text
    cut = _PARTIAL_ENTITY.sub("", text[: limit - 1])
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    return cut + "…"


def _e(text: str) -> str:
    return escape(_clip(text))


def _link(url: str, title: str) -> str:
    # A '|' would end the URL part of Slack's <url|text> syntax.
    return f"<{escape(url).replace('|', '%7C')}|{_e(title)}>"


def _action(a: ActionItemView, *, with_meeting: bool = False) -> str:
    due = f" · due {a.due.isoformat()}" if a.due else ""
    overdue = " *OVERDUE*" if a.overdue else ""
    where = f" _({_e(a.meeting)})_" if with_meeting else f" — {_e(a.owner)}"
    mark = ":point_right: *Yours:* " if a.mine else "• "
    return f"{mark}{_e(a.task)}{where}{due}{overdue}"


def _entries(section: InitiativeDigest) -> list[tuple[str, list[str]]]:
    """The section's entries as (kind title, mrkdwn lines), one line per entry."""
    kinds: list[tuple[str, list[str]]] = []
    metrics = []
    for m in section.metrics:
        parts = [f"• *{_e(m.indicator)}*: {_e(m.value_text)}"]
        if m.change_text:
            parts.append(f"({m.change_text})")
        if m.bar:
            parts.append(f"`{m.bar}`")
        parts.extend(f"*{flag.upper()}*" for flag in m.flags)
        metrics.append(" ".join(parts))
    milestones = [
        f"• *{m.label.upper()}* {_e(m.title)}" + (f" · due {m.due.isoformat()}" if m.due else "")
        for m in section.milestones
    ]
    meetings = []
    for mt in section.meetings:
        lines = [f"• *{_e(mt.title)}* · {mt.held_text}"]
        lines += [f"    Decision: {_e(d)}" for d in mt.decisions[:3]]
        lines += [f"    {_action(a)}" for a in mt.action_items[:5]]
        hidden = len(mt.decisions[3:]) + len(mt.action_items[5:])
        if hidden:
            lines.append(f"    _…and {hidden} more in the email digest_")
        meetings.append("\n".join(lines))
    updates = [
        f"• *{_link(u.url, u.title) if u.url else _e(u.title)}*"
        + (f"\n    {_e(u.excerpt).replace(chr(10), ' ')}" if u.excerpt else "")
        for u in section.updates
    ]
    for title, lines in (
        ("Metrics", metrics),
        ("Milestones", milestones),
        ("Meetings", meetings),
        ("Updates", updates),
    ):
        if lines:
            kinds.append((title, lines))
    return kinds


def _sections(title: str, lines: list[str]) -> list[tuple[str, int]]:
    """Pack lines under a bold title into section texts of at most 3000 characters."""
    packed: list[tuple[str, int]] = []
    text, count = f"*{title}*", 0
    for raw in lines:
        line = _clip_escaped(raw, MAX_SECTION_CHARS - len(title) - 20)
        if count and len(text) + 1 + len(line) > MAX_SECTION_CHARS:
            packed.append((text, count))
            text, count = f"*{title} (continued)*", 0
        text, count = f"{text}\n{line}", count + 1
    packed.append((text, count))
    return packed


def _section_block(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def digest_blocks(view: DigestView) -> list[Block]:
    """The digest as at most 50 Block Kit blocks.

    Args:
        view: the digest, from :func:`services.digest.view.build_digest`.

    Returns:
        Blocks for ``chat.postMessage``; pass a plain-text fallback as ``text`` beside them.
    """
    kind = "Daily" if view.frequency == "daily" else "Weekly"
    blocks: list[Block] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"{kind} digest {view.period}"[:150]},
        }
    ]
    who = f"For {_e(view.recipient_name)} · " if view.recipient_name else ""
    n = view.event_count
    context = f"{who}{n} update{'s' * (n != 1)} · {_e(view.timezone)}"
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    if view.is_empty:
        blocks.append(_section_block("Nothing new since your last digest."))
        return blocks
    # (block, number of entries it carries), so a cut can say what it left out.
    body: list[tuple[Block, int]] = []
    if view.my_action_items:
        mine = view.my_action_items
        lines = [_action(a, with_meeting=True) for a in mine[:MAX_OWN_ITEMS]]
        if len(mine) > MAX_OWN_ITEMS:
            lines.append(f"_…and {len(mine) - MAX_OWN_ITEMS} more in the email digest_")
        body += [(_section_block(t), c) for t, c in _sections("Your action items", lines)]
    for section in view.initiatives:
        header = {"type": "plain_text", "text": _clip(section.initiative, MAX_HEADER_CHARS)}
        body.append(({"type": "header", "text": header}, 0))
        for title, lines in _entries(section):
            body += [(_section_block(t), c) for t, c in _sections(title, lines)]
    room = MAX_BLOCKS - len(blocks)
    if len(body) <= room:
        return blocks + [b for b, _ in body]
    kept = body[: room - 1]
    while kept and not kept[-1][1]:  # no initiative header without its entries
        kept.pop()
    left_out = sum(c for _, c in body[len(kept) :])
    note = f"_…and {left_out} more entries: the email digest has them all._"
    return [*blocks, *(b for b, _ in kept), {"type": "context", "elements": [_mrkdwn(note)]}]


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": text}


def fallback_text(view: DigestView) -> str:
    """The plain ``text`` to send beside the blocks (notifications, screen readers)."""
    kind = "Daily" if view.frequency == "daily" else "Weekly"
    n = view.event_count
    return f"{kind} digest {view.period}: {n} update{'s' * (n != 1)}"
