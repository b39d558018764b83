"""Every environment variable the code reads has its row in the README's configuration table."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import notifiers
import services

ROOT = Path(__file__).resolve().parents[1]
# a direct read: os.environ["X"], os.environ.get("X"), os.getenv("X"), environ.setdefault...
DIRECT = re.compile(r"(?:environ(?:\.get|\.setdefault)?\(?\[?|getenv\()\s*[\"'](IMPACTBUS_\w+)")


def _settings_classes() -> set[type[BaseSettings]]:
    for package in (services, notifiers):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    found: set[type[BaseSettings]] = set()
    todo = list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith(("services.", "notifiers.")):
            found.add(cls)
    return found


def _variables(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def read_variables() -> dict[str, str]:
    """Variable -> where it is read (a settings class, or a file reading it directly)."""
    where = {v: cls.__qualname__ for cls in _settings_classes() for v in _variables(cls)}
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("notifiers/**/*.py")]:
        for match in DIRECT.finditer(path.read_text()):
            where.setdefault(match.group(1), str(path.relative_to(ROOT)))
    return where


def documented() -> set[str]:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("|")]
    return {m for row in rows for m in re.findall(r"`(IMPACTBUS_\w+)`", row.split("|")[1])}


def test_every_variable_read_has_a_row_in_the_readme() -> None:
    read = read_variables()
    missing = sorted(f"{v} ({read[v]})" for v in set(read) - documented())
    assert missing == []


def test_the_readme_documents_no_variable_nothing_reads() -> None:
    assert sorted(documented() - set(read_variables())) == []
