"""The hub's errors. Every error impactbus raises on purpose derives from one base.

Hierarchy::

    ImpactbusError
    ├── InvalidInputError        bad input from a user or another system (one clear line)
    │   └── InvalidSubjectError  a subject, token or pattern that breaks the NATS rules
    ├── NotFoundError            a recipient, subscription or event that does not exist
    ├── BusUnavailableError      no NATS server to talk to (hub not running, wrong URL)
    └── DeliveryError            raised by notifiers (see ``notifiers.base``)
        ├── TransientDeliveryError   retry later with backoff
        └── PermanentDeliveryError   no retry: dead letter

Third-party errors are translated where they enter (the bus, the notifiers); the CLI and
the HTTP API print an ``ImpactbusError``'s message, never a traceback.
"""

from __future__ import annotations


class ImpactbusError(Exception):
    """Base of every error impactbus raises on purpose."""


class InvalidInputError(ImpactbusError, ValueError):
    """Input from a user or another system that cannot be accepted."""


class InvalidSubjectError(InvalidInputError):
    """A subject, subject token or subscription pattern that breaks the NATS rules."""


class NotFoundError(ImpactbusError, LookupError):
    """A recipient, subscription or event that does not exist."""


class BusUnavailableError(ImpactbusError):
    """No NATS server can be reached."""
