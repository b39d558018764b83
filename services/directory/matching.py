"""The subscription index: subject -> matching subscriptions, without scanning them all.

A trie over subject tokens. Each node has literal children, a ``*`` child and the
subscriptions whose pattern ends there with ``>`` or exactly. Matching an event subject of
four tokens visits at most 2^3 paths, whatever the number of subscriptions, so a match
costs microseconds with 100,000 subscriptions.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Generic, Literal, Protocol, TypeVar

from schemas.directory import version_of
from schemas.subjects import validate_pattern
from schemas.targets import CHANNELS, Channel


class Routable(Protocol):
    """What the index needs of a subscription."""

    @property
    def id(self) -> str: ...
    @property
    def pattern(self) -> str: ...


S = TypeVar("S", bound=Routable)


@dataclass(frozen=True, slots=True)
class Route:
    """A subscription as the router keeps it: five (interned) strings.

    The pydantic model costs about 1.2 KB per subscription; 100,000 of them would not fit
    the router's memory target.
    """

    id: str
    recipient: str
    pattern: str
    channel: Channel
    mode: Literal["immediate", "digest"]
    version: str | None = None
    """The subscription's version (:func:`schemas.directory.version_of`), for its links."""

    @classmethod
    def from_json(cls, raw: bytes) -> Route:
        """Parse a ``subscriptions`` KV value, checking what routing relies on.

        Raises:
            ValueError: not a subscription.
        """
        try:
            data = json.loads(raw)
            channel, mode = data.get("channel"), data.get("mode", "immediate")
            if channel not in CHANNELS or mode not in ("immediate", "digest"):
                raise ValueError(f"bad channel {channel!r} or mode {mode!r}")
            return cls(
                id=str(data["id"]),
                recipient=sys.intern(str(data["recipient"])),
                pattern=_pattern(str(data["pattern"])),
                channel=channel,
                mode=mode,
                version=_version(data.get("created_at")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a subscription: {exc!r}") from None


def _version(created: object) -> str | None:
    # a creation time the router cannot read costs the links their version, not the route
    try:
        return version_of(created) if isinstance(created, str) else None
    except ValueError:
        return None


@lru_cache(maxsize=65_536)
def _pattern(pattern: str) -> str:
    return sys.intern(validate_pattern(pattern))


@dataclass(slots=True)
class _Node(Generic[S]):
    children: dict[str, _Node[S]] = field(default_factory=dict)
    exact: dict[str, S] = field(default_factory=dict)
    rest: dict[str, S] = field(default_factory=dict)  # pattern ended with '>'


class SubscriptionIndex(Generic[S]):
    """Subscriptions indexed by their pattern's tokens."""

    def __init__(self, subscriptions: list[S] | None = None) -> None:
        self._root: _Node[S] = _Node()
        self._by_id: dict[str, S] = {}
        for sub in subscriptions or ():
            self.add(sub)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, sub_id: object) -> bool:
        return sub_id in self._by_id

    def all(self) -> list[S]:
        """Every subscription in the index."""
        return list(self._by_id.values())

    def add(self, sub: S) -> None:
        """Add or replace a subscription."""
        if sub.id in self._by_id:
            self.remove(sub.id)
        node = self._root
        tokens = sub.pattern.split(".")
        for token in tokens:
            if token == ">":
                node.rest[sub.id] = sub
                break
            node = node.children.setdefault(token, _Node[S]())
        else:
            node.exact[sub.id] = sub
        self._by_id[sub.id] = sub

    def remove(self, sub_id: str) -> S | None:
        """Remove a subscription; returns it, or ``None`` if it was not there."""
        sub = self._by_id.pop(sub_id, None)
        if sub is None:
            return None
        path: list[tuple[_Node[S], str]] = []
        node = self._root
        for token in sub.pattern.split("."):
            if token == ">":
                node.rest.pop(sub_id, None)
                break
            path.append((node, token))
            node = node.children[token]
        else:
            node.exact.pop(sub_id, None)
        # prune empty branches so the trie does not grow with churn
        for parent, token in reversed(path):
            child = parent.children[token]
            if child.children or child.exact or child.rest:
                break
            del parent.children[token]
        return sub

    def match(self, subject: str) -> list[S]:
        """Every subscription whose pattern matches ``subject`` (a concrete subject)."""
        tokens = subject.split(".")
        found: list[S] = []
        stack: list[tuple[_Node[S], int]] = [(self._root, 0)]
        n = len(tokens)
        while stack:
            node, i = stack.pop()
            if i == n:
                found.extend(node.exact.values())
                continue
            if node.rest:
                found.extend(node.rest.values())
            child = node.children.get(tokens[i])
            if child is not None:
                stack.append((child, i + 1))
            star = node.children.get("*")
            if star is not None:
                stack.append((star, i + 1))
        return found
