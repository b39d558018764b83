"""The one jinja2 Environment of the hub.

Autoescape is on for every template except plain-text ones (``*.txt.j2``), decided by
file name: ``select_autoescape`` alone keys on the last extension and would miss
``.html.j2``. Undefined variables raise (``StrictUndefined``) instead of rendering empty.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(".txt.j2")


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The shared, autoescaping environment (templates under ``notifiers/templates``)."""
    # S701: autoescape is a function, on for every template but *.txt.j2 (see above).
    return Environment(
        loader=PackageLoader("notifiers", "templates"),
        autoescape=_autoescape,  # noqa: S701
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # templates ship with the package: no stat() per render
        enable_async=False,
    )


def render(name: str, **context: Any) -> str:
    """Render template ``name`` (e.g. ``email/milestone.html.j2``) with ``context``."""
    return environment().get_template(name).render(**context)
