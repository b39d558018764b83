"""Machine-readable contracts: JSON Schema per event kind and the AsyncAPI document.

``impactbus schema --json`` writes one JSON Schema per kind (``event.<kind>.schema.json``,
the CloudEvents envelope with that kind's ``data``) plus ``event.schema.json`` (any kind).
``impactbus schema --asyncapi`` writes ``asyncapi.json``, built from the declarations
:meth:`services.bus.Bus.ensure_topology` makes on the server (:mod:`services.bus.topology`):
a channel per stream subject and per durable consumer's filter, a *send* operation per
stream subject and a *receive* operation per consumer, and the payloads from the models
in :mod:`schemas`. Nothing in it is declared a second time, so it cannot drift from the
streams and consumers, nor from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, create_model
from pydantic.json_schema import models_json_schema

from schemas.delivery import Delivery
from schemas.events import DATA_MODELS, TYPE_PREFIX, Event
from schemas.subjects import EVENT_KINDS, EventKind
from services.bus.names import DELIVERIES, EVENTS
from services.bus.topology import CONSUMERS, STREAMS

SCHEMA_BASE: Final = "https://impactbus.org/schemas/"
DEFAULT_SERVER: Final = "nats://localhost:4222"


def kind_event_model(kind: EventKind) -> type[BaseModel]:
    """The envelope narrowed to one kind: ``type`` and ``data`` fixed to that kind."""
    data_model = DATA_MODELS[kind]
    type_literal: Any = Literal[f"{TYPE_PREFIX}{kind}"]  # a Literal built at run time
    model: type[BaseModel] = create_model(
        f"{data_model.__name__}Event",
        __base__=Event,
        __doc__=f"A CloudEvents 1.0 event of kind {kind!r}: {data_model.__doc__}",
        type=(type_literal, f"{TYPE_PREFIX}{kind}"),
        data=(data_model, ...),
    )
    return model


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12), one per kind plus the union."""
    out: dict[str, dict[str, Any]] = {}
    for kind in EVENT_KINDS:
        name = f"event.{kind}.schema.json"
        out[name] = _with_id(kind_event_model(kind).model_json_schema(), name)
    out["event.schema.json"] = _with_id(Event.model_json_schema(), "event.schema.json")
    return out


def _with_id(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}{name}",
        **schema,
    }


def payloads() -> dict[str, tuple[type[BaseModel], ...]]:
    """Stream name -> the models of the messages it carries (streams without a model left out).

    A consumer's channel carries what its stream does. Digest items, ticks, dead letters,
    delivery-log records and the outbox have no model of their own in :mod:`schemas`.
    """
    return {
        EVENTS: tuple(kind_event_model(kind) for kind in EVENT_KINDS),
        DELIVERIES: (Delivery,),
    }


def _channel_id(subject: str) -> str:
    return subject.removesuffix(".>")


def asyncapi_document(server: str = DEFAULT_SERVER) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the hub's streams and durable consumers.

    Args:
        server: the NATS URL the document names as its server.
    """
    models = payloads()
    everything = {m.__name__: m for ms in models.values() for m in ms}
    _, defs = models_json_schema(
        [(m, "validation") for m in everything.values()],
        ref_template="#/components/schemas/{model}",
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def channel(subject: str, stream: str, description: str) -> str:
        cid = _channel_id(subject)
        channels[cid] = {
            "address": subject,
            "description": description,
            "messages": {
                m.__name__: {"$ref": f"#/components/messages/{m.__name__}"}
                for m in models.get(stream, ())
            },
            "servers": [{"$ref": "#/servers/nats"}],
        }
        return cid

    def operation(op_id: str, action: str, cid: str, summary: str, **extra: Any) -> None:
        operations[op_id] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": summary,
            "messages": [
                {"$ref": f"#/channels/{cid}/messages/{name}"} for name in channels[cid]["messages"]
            ],
            **extra,
        }

    for stream in STREAMS.values():
        for subject in stream.subjects:
            cid = channel(subject, stream.name, f"stream {stream.name}: {stream.description}")
            operation(f"publish.{cid}", "send", cid, f"publish to stream {stream.name}")
    for decl in CONSUMERS:
        if decl.filter_subject is None:  # the whole stream: each of its subjects' channels
            cids = [_channel_id(subject) for subject in STREAMS[decl.stream].subjects]
        else:
            cids = [
                channel(
                    decl.filter_subject,
                    decl.stream,
                    f"durable consumer {decl.durable} of stream {decl.stream}: {decl.description}",
                )
            ]
        for cid in cids:
            operation(
                f"consume.{decl.stream}.{decl.durable}" + (f".{cid}" if len(cids) > 1 else ""),
                "receive",
                cid,
                decl.description,
                **{"x-jetstream": {"stream": decl.stream, "durable": decl.durable}},
            )
    url = urlsplit(server)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "impactbus",
            "version": "1.0.0",
            "description": "Collective Impact initiative events on NATS JetStream. "
            "Publish an event with header Nats-Msg-Id = its idempotency key "
            "(hash of source and id).",
        },
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": url.netloc, "protocol": url.scheme or "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {
                name: {
                    "name": name,
                    "title": name,
                    "summary": (model.__doc__ or "").strip().splitlines()[0],
                    "contentType": "application/json",
                    "payload": {"$ref": f"#/components/schemas/{name}"},
                }
                for name, model in everything.items()
            },
            "schemas": defs.get("$defs", {}),
        },
    }


def write(out_dir: Path, *, schemas: bool, asyncapi: bool) -> list[Path]:
    """Write the chosen documents into ``out_dir``; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    docs: dict[str, dict[str, Any]] = json_schemas() if schemas else {}
    if asyncapi:
        docs["asyncapi.json"] = asyncapi_document()
    written = []
    for name, doc in docs.items():
        path = out_dir / name
        path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
        written.append(path)
    return written
