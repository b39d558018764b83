"""OpenAPI documentation of the ingest routes: request and response examples.

The ingest handlers read their body and ``Idempotency-Key`` header from the ``Request``
themselves (FastAPI's parameter machinery costs more per request than the rest of the
handler), so both are documented here and attached with ``openapi_extra``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

ONE_EXAMPLES: Final = {
    "short": {
        "summary": "short form",
        "value": {
            "kind": "metric",
            "initiative": "somerville",
            "topic": "bmi",
            "data": {
                "indicator": "Children at a healthy weight",
                "value": 71.5,
                "unit": "%",
                "period": "2026-09",
                "baseline": 64.0,
                "target": 75.0,
            },
        },
    },
    "cloudevents": {
        "summary": "CloudEvents 1.0 structured",
        "value": {
            "specversion": "1.0",
            "id": "01JC3Z8Q6W3V5J1T0N9X7B2M4K",
            "source": "urn:example:crm",
            "type": "org.impactbus.milestone",
            "time": "2026-10-01T09:30:00Z",
            "subject": "farmers-market",
            "initiative": "somerville",
            "datacontenttype": "application/json",
            "data": {
                "kind": "milestone",
                "title": "Market opens on Saturdays",
                "status": "reached",
                "due": "2026-10-01",
            },
        },
    },
}


@dataclass(frozen=True, slots=True)
class BodySpec:
    """What one ingest route documents about its body and its ``Idempotency-Key``."""

    schema: dict[str, Any]
    examples: dict[str, Any]
    key_doc: str
    key_example: str


def body_doc(spec: BodySpec, media_types: Iterable[str]) -> dict[str, Any]:
    """The ``openapi_extra`` of an ingest route: its header and its body, per media type."""
    return {
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": spec.key_doc,
                "schema": {"type": "string", "maxLength": 100},
                "example": spec.key_example,
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                media_type: {"schema": spec.schema, "examples": spec.examples}
                for media_type in sorted(media_types)
            },
        },
    }


EVENT_SCHEMA: Final = {
    "oneOf": [{"$ref": "#/components/schemas/Event"}, {"$ref": "#/components/schemas/ShortEvent"}]
}


BATCH_EXAMPLES: Final = {
    "mixed": {
        "summary": "two events, one invalid",
        "value": [
            ONE_EXAMPLES["short"]["value"],
            {"kind": "update", "initiative": "somerville", "topic": "news", "data": {"title": ""}},
        ],
    }
}


ACCEPTED: Final[dict[int | str, dict[str, Any]]] = {
    202: {
        "description": "stored in JetStream",
        "content": {
            "application/json": {
                "example": {
                    "id": "01JC3Z8Q6W3V5J1T0N9X7B2M4K",
                    "subject": "impact.somerville.metric.bmi",
                    "sequence": 42,
                    "duplicate": False,
                }
            }
        },
    },
}

BATCH_RESULTS: Final[dict[int | str, dict[str, Any]]] = {
    202: {
        "description": "every event stored",
        "content": {
            "application/json": {
                "example": {
                    "accepted": 1,
                    "rejected": 0,
                    "results": [
                        {
                            "index": 0,
                            "status": 202,
                            "id": "nightly-2026-10-01-0",
                            "subject": "impact.somerville.metric.bmi",
                            "sequence": 42,
                            "duplicate": False,
                        }
                    ],
                }
            }
        },
    },
    207: {
        "description": "some events refused: see each result's status",
        "content": {
            "application/json": {
                "example": {
                    "accepted": 1,
                    "rejected": 1,
                    "results": [
                        {
                            "index": 0,
                            "status": 202,
                            "id": "01JC3Z8Q6W3V5J1T0N9X7B2M4K",
                            "subject": "impact.somerville.metric.bmi",
                            "sequence": 43,
                            "duplicate": False,
                        },
                        {
                            "index": 1,
                            "status": 422,
                            "error": "data.title: String should have at least 1 character",
                        },
                    ],
                }
            }
        },
    },
}

ONE: Final = BodySpec(
    EVENT_SCHEMA,
    ONE_EXAMPLES,
    "short form: becomes the event id, so a retried POST is stored once; within the "
    "duplicate window, the same key with another body is refused (409)",
    "crm-sync-2026-10-01-bmi",
)
BATCH: Final = BodySpec(
    {"type": "array", "maxItems": 1000, "items": EVENT_SCHEMA},
    BATCH_EXAMPLES,
    "short-form item i gets the event id '<key>-<i>', so a retried batch is stored once; "
    "within the duplicate window, the same key with another body is refused (409)",
    "crm-sync-2026-10-01",
)
