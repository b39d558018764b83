r"""Bounded, printable string types shared by every model.

Every string that enters the hub is bounded in length and free of NUL and control
characters (multi-line text may keep ``\n`` and ``\t``; its CRLF and lone CR line ends,
as browsers send a textarea's, become ``\n`` first). Single-line strings lose the Unicode
bidirectional embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069):
they would reorder what follows them in a subject line or a chat preview, which is how a
title can pass itself off as something else. Escaping for a channel (HTML, Slack mrkdwn,
email headers) happens where the string leaves, in the notifiers.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, StringConstraints
from pydantic_core import PydanticCustomError

_CONTROL_LINE: Final = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_CONTROL_TEXT: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
BIDI_CONTROLS: Final = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
"""Bidirectional embeddings, overrides and isolates (not the harmless marks LRM/RLM)."""


def _single_line(value: str) -> str:
    if _CONTROL_LINE.search(value):
        raise ValueError("must be one line without control characters")
    if BIDI_CONTROLS.search(value):
        value = BIDI_CONTROLS.sub("", value)
        if not value:
            raise PydanticCustomError(
                "string_too_short",
                "String should have at least 1 character",
                {"min_length": 1},
            )
    return value


def _text(value: str) -> str:
    # Line ends first: CR is a control character, CRLF (a textarea's) a line end.
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if _CONTROL_TEXT.search(value):
        raise ValueError("must not contain NUL or control characters")
    return value


Line = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_single_line)]
"""One line of up to 200 characters: titles, names, indicators."""

ShortLine = Annotated[
    str, StringConstraints(min_length=1, max_length=40), AfterValidator(_single_line)
]
"""A short label of up to 40 characters: units, periods."""

Text = Annotated[str, StringConstraints(max_length=20_000), AfterValidator(_text)]
"""Multi-line text of up to 20,000 characters: bodies, summaries."""


def _token(value: str) -> str:
    from schemas.subjects import validate_token

    return validate_token(value, "token")


Token = Annotated[str, AfterValidator(_token)]
"""A subject token: lowercase letters, digits, ``-`` and ``_`` (1 to 64)."""
