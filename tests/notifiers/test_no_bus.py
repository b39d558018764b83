"""Notifiers know no bus and read no environment: both are handed to them."""

from __future__ import annotations

import re
from pathlib import Path

NOTIFIERS = Path(__file__).resolve().parents[2] / "notifiers"


def test_no_notifier_reads_the_environment_itself() -> None:
    readers = re.compile(r"\bos\.environ\b|\bgetenv\b|\bfrom os import\b")
    found = [
        f"{path.name}:{n}"
        for path in sorted(NOTIFIERS.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if readers.search(line)
    ]
    assert found == []


def test_no_notifier_imports_nats() -> None:
    imports = re.compile(r"^\s*(import|from)\s+(nats|faststream)\b")
    found = [
        f"{path.name}:{n}"
        for path in sorted(NOTIFIERS.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if imports.search(line)
    ]
    assert found == []
