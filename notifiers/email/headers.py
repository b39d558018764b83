"""Email headers from untrusted strings: one line each, never an encoded word.

Python 3.11's ``email`` package decodes RFC 2047 encoded words on assignment, so a title
such as ``=?utf-8?q?x=0D=0ABcc:_eve@x?=`` would otherwise become a real ``Bcc:`` header;
:func:`header_text` strips every line-breaking character and defuses ``=?``. :data:`POLICY`
keeps ``List-*`` headers verbatim (never encoded, folded only between URIs).
"""

from __future__ import annotations

import re
from email import policy as email_policy
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.policy import Policy
from typing import Final

from notifiers.presentation import headline
from schemas.events import Event

SUBJECT_MAX: Final = 180

# C0, DEL, C1 (includes NEL U+0085) and the Unicode line/paragraph separators: all of
# them split lines somewhere (str.splitlines, mail clients), so none may enter a header.
_LINE_BREAKERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_text(value: str) -> str:
    """``value`` made safe for a header: one line, no encoded words, no line breakers.

    Args:
        value: an untrusted string (title, display name...).

    Returns:
        The string with every control or line-breaking character replaced by a space,
        runs of whitespace collapsed, and ``=?`` turned into ``= ?`` so that the email
        package can never decode an RFC 2047 encoded word (which may carry CR/LF).
    """
    flat = " ".join(_LINE_BREAKERS.sub(" ", value).split())
    return flat.replace("=?", "= ?")


def clip(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, ending in an ellipsis when cut."""
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def angle(value: str) -> str:
    """A URL or message id for ``<...>`` in a header: nothing that ends the brackets."""
    return re.sub(r"[\s<>]", "", header_text(value))


class _UriListHeader(UnstructuredHeader, BaseHeader):
    """``List-Unsubscribe`` and friends: ``<uri>, <uri>`` kept verbatim.

    Python folds a long unstructured value into RFC 2047 encoded words, which is not
    allowed in these structured headers and breaks one-click unsubscribe (a signed URL is
    long). This folds only between the URIs and never encodes.
    """

    def fold(self, *, policy: Policy) -> str:
        name, parts = self.name, str(self).split(", ")
        if len(name) + 2 + len(str(self)) <= 78:
            return f"{name}: {self}{policy.linesep}"
        return f"{name}: " + f",{policy.linesep} ".join(parts) + policy.linesep


class _Registry(HeaderRegistry):
    """A header registry that builds each header class once.

    The stdlib's builds a new class every time a header is set (~0.5 ms a message here);
    the classes are stateless, so one per header name is enough.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}
        for name in ("list-unsubscribe", "list-unsubscribe-post", "list-id"):
            self.map_to_type(name, _UriListHeader)

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        if key not in self._classes:
            self._classes[key] = super().__getitem__(name)
        return self._classes[key]


def _policy() -> Policy:
    # A registry of our own: the default policy's is shared by every user of `email`.
    return email_policy.default.clone(header_factory=_Registry())


POLICY: Final = _policy()
"""The default email policy, with ``List-*`` headers that are never encoded."""


def subject_line(event: Event) -> str:
    """``[<initiative>] <headline>``, one line of at most 180 characters."""
    return clip(header_text(f"[{event.initiative}] {headline(event)}"), SUBJECT_MAX)
