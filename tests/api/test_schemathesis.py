"""schemathesis over the API's own OpenAPI document, on a real API and a real nats-server.

Every operation is fuzzed with a token of each role, with requests that fit the document
and requests that do not. No answer may be a server error, and every answer must be one
the document declares, with the declared content type and body schema. Writes come
before reads, and the listings are read once more at the end, so a value one write
stored cannot poison the reads that follow.

schemathesis calls the API with ``requests`` (blocking), so the fuzzing runs in a worker
thread while the test's event loop serves the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import Api, ApiFactory, bearer

MAX_EXAMPLES = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# writes first, then reads, deletes last; then the listings once more
ORDER = {"PUT": 0, "POST": 1, "GET": 2, "DELETE": 3}
LISTINGS = ("/v1/recipients", "/v1/subscriptions")


def fuzz(url: str, tokens: dict[str, str]) -> list[str]:
    """Run every operation with every token; return what failed (empty: nothing)."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: (ORDER.get(op.method.upper(), 9), op.path),
    )
    rounds = [
        *operations,
        *(op for op in operations if op.method.upper() == "GET" and op.path in LISTINGS),
    ]
    failures: list[str] = []
    called: set[str] = set()
    for role, token in tokens.items():
        for operation in rounds:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                label = f"{role} {operation.label} ({mode.value})"
                try:
                    run(operation.as_strategy(generation_mode=mode), url, token, called)()
                except Unsatisfiable:
                    continue  # nothing to break: no parameters, no body
                except Exception as exc:
                    failures.append(f"{label}: {exc}")
    # not a vacuous pass: every operation was called
    failures += [f"{op.label}: never called" for op in operations if op.label not in called]
    return failures


def run(strategy: object, url: str, token: str, called: set[str]) -> Callable[[], None]:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        called.add(case.operation.label)
        case.call_and_validate(base_url=url, headers=bearer(token), checks=CHECKS, timeout=15)

    return check


async def test_no_server_error_and_every_answer_as_documented(api_factory: ApiFactory) -> None:
    api: Api = await api_factory(rate_per_s=0)
    tokens = {
        "admin": await api.token("admin", ()),
        "backbone": await api.token("backbone", ("somerville",)),
        "system": await api.token("system", ("somerville",)),
        "partner": await api.token("partner", ("somerville",), recipient="maria"),
    }
    failures = await asyncio.to_thread(fuzz, api.url, tokens)
    assert not failures, "\n\n".join(failures)
