"""NATS errors translated to the hub's own, in one place (as httpx maps httpcore's).

``with map_nats_errors():`` around bus work turns what nats-py raises into
:mod:`schemas.errors`, so callers above the bus catch only the hub's errors:

==================================================  =========================
nats-py                                             hub
==================================================  =========================
``TimeoutError``, ``nats.errors.TimeoutError``      :class:`BusUnavailableError`
connection closed, reconnecting, draining, stale,
no servers, no responders, JetStream unavailable    :class:`BusUnavailableError`
``nats.js.errors.KeyNotFoundError``, ``NotFoundError``  :class:`NotFoundError`
``nats.js.errors.KeyWrongLastSequenceError``        :class:`ConflictError`
``nats.js.errors.BadRequestError``, bad subject/key  :class:`InvalidInputError`
any other ``nats.errors.Error``                      :class:`BusUnavailableError`
==================================================  =========================

The first matching row wins, looked up along the raised type's MRO.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import nats.errors
import nats.js.errors

from schemas.errors import (
    BusUnavailableError,
    ConflictError,
    ImpactbusError,
    InvalidInputError,
    NotFoundError,
)

_TABLE: Final[dict[type[BaseException], type[ImpactbusError]]] = {
    nats.js.errors.KeyWrongLastSequenceError: ConflictError,
    nats.js.errors.KeyNotFoundError: NotFoundError,
    nats.js.errors.NotFoundError: NotFoundError,
    nats.js.errors.BadRequestError: InvalidInputError,
    nats.errors.BadSubjectError: InvalidInputError,
    nats.js.errors.InvalidKeyError: InvalidInputError,
    nats.js.errors.ServiceUnavailableError: BusUnavailableError,
    nats.errors.NoRespondersError: BusUnavailableError,
    nats.errors.TimeoutError: BusUnavailableError,
    nats.errors.ConnectionClosedError: BusUnavailableError,
    nats.errors.ConnectionReconnectingError: BusUnavailableError,
    nats.errors.ConnectionDrainingError: BusUnavailableError,
    nats.errors.StaleConnectionError: BusUnavailableError,
    nats.errors.NoServersError: BusUnavailableError,
    nats.errors.Error: BusUnavailableError,
    TimeoutError: BusUnavailableError,
    ConnectionError: BusUnavailableError,
}

_WORDS: Final[dict[type[ImpactbusError], str]] = {
    BusUnavailableError: "NATS stopped answering",
    NotFoundError: "not found",
    ConflictError: "changed meanwhile by someone else: try again",
    InvalidInputError: "NATS refused the request",
}


def hub_error(exc: BaseException) -> ImpactbusError | None:
    """The hub's error for a nats-py (or socket) error, or ``None`` if it is neither."""
    if isinstance(exc, ImpactbusError):
        return exc
    for cls in type(exc).__mro__:
        target = _TABLE.get(cls)
        if target is not None:
            detail = str(exc) or type(exc).__name__
            return target(f"{_WORDS[target]} ({detail})")
    return None


@contextlib.contextmanager
def map_nats_errors() -> Iterator[None]:
    """Translate nats-py errors raised in the block into the hub's errors.

    Raises:
        ImpactbusError: the translated error (the original is its ``__cause__``).
    """
    try:
        yield
    except Exception as exc:
        mapped = hub_error(exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


NatsError: Final = nats.errors.Error
"""The base of nats-py's errors, for a last-resort handler above the bus (an HTTP app's
exception handlers) that must still recognise one a code path did not translate."""
