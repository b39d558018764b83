"""What the fakes share: wait, without polling, until enough records have arrived."""

from __future__ import annotations

import threading
from typing import TypeVar

T = TypeVar("T")


def wait_records(
    cond: threading.Condition, records: list[T], n: int, timeout: float, what: str
) -> list[T]:
    """Block until ``records`` holds ``n`` items (appended under ``cond``); return a copy.

    Raises:
        TimeoutError: fewer arrived within ``timeout`` seconds.
    """
    with cond:
        if not cond.wait_for(lambda: len(records) >= n, timeout):
            raise TimeoutError(f"{len(records)} of {n} {what} after {timeout}s")
        return list(records)
