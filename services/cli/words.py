"""Validation errors in a command line's words: the flag, and the expected form.

The schemas report problems by model field path and pydantic error type
(``data.due``, ``date_from_datetime_parsing``). A user typed ``--due``, so each command
has one :data:`FlagMap` from field paths to its flags (with the expected form of the
value in words), and :func:`plain_words` turns an error type into plain words. Pure
functions: the CLI calls :func:`explain` on an :class:`~schemas.errors.InvalidFieldsError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from schemas.errors import FieldProblem, InvalidFieldsError


@dataclass(frozen=True, slots=True)
class Flag:
    """How a command takes a field.

    Attributes:
        name: the flag or argument as the user types it: ``--due``, ``ID``.
        form: the expected form in words, for values that do not parse or match
            (``a date like 2027-01-31``); ``None``: the error type's own words.
    """

    name: str
    form: str | None = None


FlagMap = Mapping[str, Flag]
"""Field path (``data.due``; list positions left out: ``data.action_items.due``) -> flag."""

DATE: Final = "a date like 2027-01-31"
DATETIME: Final = "a date and time with its UTC offset, like 2027-01-31T18:00-05:00"
NUMBER: Final = "a number like 17.5"

RECIPIENT_FLAGS: Final[FlagMap] = {
    "id": Flag("ID", "a short id of a-z, 0-9, - and _ like maria"),
    "email": Flag("--email", "an email address like maria@school.example"),
    "slack_channel": Flag(
        "--slack-channel", "a Slack channel id like C123 (capitals and digits) or a #name"
    ),
    "webhook_url": Flag("--webhook-url", "an https URL like https://example.org/hook"),
    "name": Flag("--name"),
    "organisation": Flag("--organisation"),
    "timezone": Flag("--timezone", "an IANA time zone like America/New_York"),
    "digest": Flag("--digest", "daily@08:00 or weekly@mon-08:00"),
    "locale": Flag("--locale", "a language code like en or pt-BR"),
    "owner": Flag("--owner", "a recipient id like maria"),
}
"""``impactbus recipients add|update``."""

SUBSCRIBE_FLAGS: Final[FlagMap] = {
    "recipient": Flag("RECIPIENT", "a recipient id like maria"),
    "pattern": Flag("PATTERN", "a pattern like impact.somerville.>"),
    "channel": Flag("--via"),
    "mode": Flag("--mode"),
}
"""``impactbus subscribe``."""

POST_FLAGS: Final[FlagMap] = {
    "id": Flag("--id"),
    "source": Flag("--source", "a URI like urn:impactbus:cli"),
    "initiative": Flag("--initiative", "an id of a-z, 0-9, - and _ like somerville"),
    "subject": Flag("--topic", "an id of a-z, 0-9, - and _ like farmers-market"),
    "time": Flag("--time", DATETIME),
    "data.due": Flag("--due", DATE),
    "data.held_at": Flag("--held-at", DATETIME),
    "data.value": Flag("--value", NUMBER),
    "data.baseline": Flag("--baseline", NUMBER),
    "data.target": Flag("--target", NUMBER),
    "data.attendees": Flag("--attendee"),
    "data.decisions": Flag("--decision"),
    "data.action_items": Flag("--action", "'task | owner' or 'task | owner | 2027-01-31'"),
    "data.action_items.task": Flag("--action"),
    "data.action_items.owner": Flag("--action"),
    "data.action_items.due": Flag("--action", "a due date like 2027-01-31"),
}
"""``impactbus post`` (the other ``data.<field>`` are ``--<field>``)."""

_FORMAT_ERRORS: Final[Mapping[str, str]] = {
    "date_parsing": DATE,
    "date_type": DATE,
    "date_from_datetime_parsing": DATE,
    "date_from_datetime_inexact": DATE,
    "datetime_parsing": DATETIME,
    "datetime_type": DATETIME,
    "datetime_from_date_parsing": DATETIME,
    "timezone_aware": DATETIME,
    "float_parsing": NUMBER,
    "float_type": NUMBER,
    "int_parsing": "a whole number like 3",
    "int_type": "a whole number like 3",
    "bool_parsing": "yes or no",
    "string_type": "text",
    "list_type": "a list",
    "url_parsing": "a URL like https://example.org/hook",
    "url_scheme": "an https URL like https://example.org/hook",
    "url_type": "a URL like https://example.org/hook",
    "string_pattern_mismatch": "letters, digits and the characters the field allows",
}
"""Error types that mean "the value has the wrong form" -> that form in words."""


def _too_short(ctx: Mapping[str, str]) -> str:
    n = ctx.get("min_length", "1")
    return "must not be empty" if n == "1" else f"must be at least {n} characters"


def _one_of(ctx: Mapping[str, str]) -> str:
    return f"expected {ctx.get('expected', 'one of the listed values').replace(chr(39), '')}"


_CONSTRAINT_ERRORS: Final[Mapping[str, Callable[[Mapping[str, str]], str]]] = {
    "missing": lambda ctx: "required",
    "string_too_short": _too_short,
    "string_too_long": lambda ctx: f"must be at most {ctx.get('max_length', '?')} characters",
    "too_long": lambda ctx: f"at most {ctx.get('max_length', '?')} allowed",
    "too_short": lambda ctx: f"at least {ctx.get('min_length', '?')} needed",
    "greater_than": lambda ctx: f"must be more than {ctx.get('gt', '?')}",
    "greater_than_equal": lambda ctx: f"must be at least {ctx.get('ge', '?')}",
    "less_than": lambda ctx: f"must be less than {ctx.get('lt', '?')}",
    "less_than_equal": lambda ctx: f"must be at most {ctx.get('le', '?')}",
    "finite_number": lambda ctx: "expected a finite number",
    "literal_error": _one_of,
    "enum": _one_of,
    "extra_forbidden": lambda ctx: "is not an option here",
}
"""Error types that break a constraint of a well-formed value -> the constraint in words."""


def plain_words(problem: FieldProblem, form: str | None = None) -> str:
    """What is wrong with one field, in plain words (no field name, no error type).

    Args:
        problem: one problem of an :class:`~schemas.errors.InvalidFieldsError`.
        form: the field's expected form in words, said instead of the generic form of a
            value that does not parse or match.
    """
    if problem.type in _FORMAT_ERRORS:
        return f"expected {form or _FORMAT_ERRORS[problem.type]}"
    if problem.type in _CONSTRAINT_ERRORS:
        return _CONSTRAINT_ERRORS[problem.type](problem.ctx)
    # value_error: our validators' own sentences, which already say what to use
    message = problem.message.removeprefix("Value error, ")
    if form and message.startswith("value is not a valid"):  # email-validator's words
        return f"expected {form}"
    return message


def flag_for(loc: tuple[str | int, ...], flags: FlagMap) -> tuple[str, str | None]:
    """The flag a field path belongs to, and the item it names in a repeated flag.

    Args:
        loc: the field path of a problem (``("data", "action_items", 1, "due")``).
        flags: the command's map.

    Returns:
        ``("--action", "item 2")``; a path the map lacks is ``--<its last field>``.
    """
    names = [str(p) for p in loc if not isinstance(p, int)]
    items = [f"item {p + 1}" for p in loc if isinstance(p, int)]
    for end in range(len(names), 0, -1):
        flag = flags.get(".".join(names[:end]))
        if flag is not None:
            return flag.name, items[0] if items else None
    last = names[-1] if names else "input"
    return "--" + last.replace("_", "-"), items[0] if items else None


def explain(exc: InvalidFieldsError, flags: FlagMap) -> str:
    """Every problem of ``exc`` as ``--flag: plain words``, joined by ``; ``."""
    parts: list[str] = []
    for problem in exc.problems:
        name, item = flag_for(problem.loc, flags)
        key = ".".join(str(p) for p in problem.loc if not isinstance(p, int))
        flag = flags.get(key)
        part = str(problem.loc[-1]) if item and not isinstance(problem.loc[-1], int) else None
        where = f"{name} ({item}{', ' + part if part else ''})" if item else name
        line = f"{where}: {plain_words(problem, flag.form if flag else None)}"
        if line not in parts:
            parts.append(line)
    return "; ".join(parts) or str(exc)
