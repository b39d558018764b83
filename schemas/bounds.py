"""Bounds on numbers and times: strict for new input, lenient for what is stored.

Events stay on the EVENTS stream for a year, and older ones were accepted under looser
rules (any finite number, any time Python can hold). So the schema has two levels:

- **New input** (HTTP API, CLI, web form, the router for events published straight on
  NATS) is validated with ``context=NEW_INPUT``: numbers must be JSON numbers (not
  ``true``/``false`` or strings) with ``|x| <= 10**12``, and times and dates must lie
  between 1900-01-01 and 2200-01-01 UTC.
- **Stored input** (digest items, pages, feeds, queued deliveries, dead-letter replay) is
  validated without a context and keeps the old rules, so nothing once accepted becomes
  unreadable. Renderers show what they cannot show as :data:`UNSHOWN` (an en dash).

The validators here are the only per-field work the strict level adds: one Python call per
number or time, which returns at once when there is no context.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, tzinfo
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import AwareDatetime, Field, ValidationInfo, ValidatorFunctionWrapHandler
from pydantic.functional_validators import AfterValidator, WrapValidator
from pydantic_core import PydanticCustomError

NUMBER_LIMIT: Final = 10**12
"""The largest magnitude a number of new input may have."""
TIME_MIN: Final = datetime(1900, 1, 1, tzinfo=UTC)
TIME_MAX: Final = datetime(2200, 1, 1, tzinfo=UTC)
DATE_MIN: Final = TIME_MIN.date()
DATE_MAX: Final = TIME_MAX.date()

_KEY: Final = "impactbus.new_input"
NEW_INPUT: Final[Mapping[str, object]] = MappingProxyType({_KEY: True})
"""The pydantic validation ``context`` that turns the bounds on."""

NUMBER_RULE: Final = "must be a number from minus one trillion to one trillion (|x| ≤ 10^12)"
TIME_RULE: Final = "must be between 1900-01-01 and 2200-01-01 (UTC)"


def is_new_input(info: ValidationInfo) -> bool:
    """Whether this validation runs with :data:`NEW_INPUT` (the strict level)."""
    context = info.context
    return context is not None and context.get(_KEY) is True


def _number(value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> float:
    context = info.context
    if context is None or context.get(_KEY) is not True:
        return float(handler(value))
    # Lax pydantic takes true as 1.0 and "12" as 12.0: new input must say what it means.
    if isinstance(value, bool | str):
        raise PydanticCustomError(
            "number_type", "must be a number, not {given}", {"given": _kind(value)}
        )
    number = float(handler(value))
    if not -NUMBER_LIMIT <= number <= NUMBER_LIMIT:
        raise PydanticCustomError("number_bounds", NUMBER_RULE)
    return number


def _kind(value: bool | str) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else "a string"


def _time(value: datetime, info: ValidationInfo) -> datetime:
    if is_new_input(info) and not TIME_MIN <= value <= TIME_MAX:
        raise PydanticCustomError("time_bounds", TIME_RULE)
    return value


def _date(value: date, info: ValidationInfo) -> date:
    if is_new_input(info) and not DATE_MIN <= value <= DATE_MAX:
        raise PydanticCustomError("date_bounds", TIME_RULE)
    return value


Number = Annotated[float, Field(allow_inf_nan=False), WrapValidator(_number)]
"""A finite number; new input also within ±10^12 and never a bool or a string."""

Moment = Annotated[AwareDatetime, AfterValidator(_time)]
"""An aware time; new input also between 1900 and 2200 (UTC)."""

Day = Annotated[date, AfterValidator(_date)]
"""A date; new input also between 1900-01-01 and 2200-01-01."""

# Presentation: what renderers may show. Kept beside the rules so the two stay together.

UNSHOWN: Final = "\u2013"
"""What a renderer shows for a value it cannot show (a stored number beyond the bounds)."""


def showable(value: float) -> bool:
    """Whether a number can be shown: finite and within the bounds of new input."""
    return -NUMBER_LIMIT <= value <= NUMBER_LIMIT  # False for NaN too


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` where that is no finite number."""
    if not denominator:
        return None
    try:
        share = numerator / denominator
    except (OverflowError, ZeroDivisionError):
        return None
    return share if share - share == 0 else None  # not inf, not NaN


def in_zone(moment: datetime, tz: tzinfo) -> datetime | None:
    """``moment`` in ``tz``, or ``None`` where that falls outside years 1 to 9999.

    A stored time such as ``9999-12-31T20:00-10:00`` has no UTC (nor Kiritimati) value.
    """
    try:
        return moment.astimezone(tz)
    except OverflowError:
        return None
