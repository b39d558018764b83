"""The hub's errors. Every error impactbus raises on purpose derives from one base.

Hierarchy::

    ImpactbusError
    ├── InvalidInputError        bad input from a user or another system (one clear line)
    │   ├── InvalidSubjectError  a subject, token or pattern that breaks the NATS rules
    │   └── InvalidFieldsError   fields that broke a schema, one problem per field
    ├── NotFoundError            a recipient, subscription or event that does not exist
    ├── ConflictError            changed meanwhile by someone else (a compare-and-set lost)
    ├── BusUnavailableError      no NATS server to talk to (hub not running, wrong URL),
    │                            or it stopped answering mid-command
    │   └── TopologyMismatchError  a stream on the server differs from the declared one
    │                              in a way NATS cannot change in place
    └── DeliveryError            raised by notifiers (see ``notifiers.base``)
        ├── TransientDeliveryError   retry later with backoff
        └── PermanentDeliveryError   no retry: dead letter

Third-party errors are translated where they enter (the bus, the notifiers); the CLI and
the HTTP API print an ``ImpactbusError``'s message, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ImpactbusError(Exception):
    """Base of every error impactbus raises on purpose."""


class InvalidInputError(ImpactbusError, ValueError):
    """Input from a user or another system that cannot be accepted."""


class InvalidSubjectError(InvalidInputError):
    """A subject, subject token or subscription pattern that breaks the NATS rules."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field that broke a schema, as pydantic reported it.

    Attributes:
        loc: the field's path in the model (``("data", "due")``), union tags left out.
        type: pydantic's error type (``date_from_datetime_parsing``, ``missing``...).
        message: pydantic's message.
        ctx: the error's context (``{"pattern": ...}``, ``{"max_length": "200"}``), as text.
    """

    loc: tuple[str | int, ...]
    type: str
    message: str
    ctx: dict[str, str] = field(default_factory=dict)


class InvalidFieldsError(InvalidInputError):
    """Fields that broke a schema, one :class:`FieldProblem` each.

    ``str()`` names the fields by their model paths; each face (CLI flags, form fields)
    words ``problems`` for its own user.
    """

    def __init__(self, message: str, problems: tuple[FieldProblem, ...]) -> None:
        super().__init__(message)
        self.problems = problems


class NotFoundError(ImpactbusError, LookupError):
    """A recipient, subscription or event that does not exist."""


class ConflictError(ImpactbusError):
    """A record changed meanwhile: a compare-and-set (expected revision) lost."""


class BusUnavailableError(ImpactbusError):
    """No NATS server can be reached."""


class TopologyMismatchError(BusUnavailableError):
    """An existing stream differs from the hub's declaration and NATS refuses the update.

    The hub cannot use the bus as it is (a work queue that keeps everything, or the
    other way round), so it refuses to start; the message names the stream, what
    differs and how to fix it.
    """
