"""JSON Schema per kind, the AsyncAPI document, and the admin CLI commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from schemas.events import new_event
from services.bus import Bus, EmbeddedNats
from services.bus.asyncapi import asyncapi_document, json_schemas, kind_event_model
from services.bus.topology import STREAMS
from services.cli.admin import schema, tokens_app


def cli() -> typer.Typer:
    """The admin commands on an app of their own (services.cli.app registers the same)."""
    app = typer.Typer()
    app.add_typer(tokens_app, name="tokens")
    app.command()(schema)
    return app


def test_one_json_schema_per_kind() -> None:
    docs = json_schemas()
    assert set(docs) == {
        "event.schema.json",
        *(f"event.{k}.schema.json" for k in ("metric", "milestone", "meeting", "update")),
    }
    metric = docs["event.metric.schema.json"]
    assert metric["$id"].endswith("event.metric.schema.json")
    assert metric["properties"]["type"]["const"] == "org.impactbus.metric"
    assert metric["properties"]["data"] == {"$ref": "#/$defs/MetricUpdate"}
    assert metric["additionalProperties"] is False


def test_kind_models_accept_their_events_only() -> None:
    event = new_event("milestone", "somerville", "market", {"title": "Open", "status": "reached"})
    payload = event.model_dump(mode="json")
    assert kind_event_model("milestone").model_validate(payload)
    with pytest.raises(ValueError, match="type"):
        kind_event_model("metric").model_validate(payload)


def _payload_names(doc: dict[str, Any], channel: dict[str, Any]) -> set[str]:
    """The model names a channel's messages carry (one, or the members of a union)."""
    names: set[str] = set()
    for link in channel["messages"].values():
        message = doc["components"]["messages"][link["$ref"].rsplit("/", 1)[1]]
        ref = message["payload"]["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][ref]
        members = schema.get("anyOf") or schema.get("oneOf") or [{"$ref": f"/{ref}"}]
        names.update(m["$ref"].rsplit("/", 1)[1] for m in members if "$ref" in m)
    return names


def test_asyncapi_declares_the_subjects_with_their_payloads() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"].startswith("3.")
    kinds = {"MetricUpdateEvent", "MilestoneEvent", "MeetingNotesEvent", "UpdateEvent"}
    by_address: dict[str, set[str]] = {}
    for channel in doc["channels"].values():
        by_address.setdefault(channel["address"], set()).update(_payload_names(doc, channel))
    assert by_address["impact.>"] == kinds
    assert by_address["deliver.email.>"] == {"Delivery"}
    for name in {*kinds, "Delivery"}:  # every payload's schema is in the document
        assert name in doc["components"]["schemas"]


async def test_asyncapi_channels_are_the_streams_and_consumers_the_server_has(bus: Bus) -> None:
    """What ensure_topology declared on a real server, and nothing else, is in the document."""
    subjects: set[str] = set()
    durables: set[tuple[str, str]] = set()
    for info in await bus.js.streams_info():
        name = info.config.name or ""
        if name.startswith("KV_"):  # KV buckets are read through the KV API, not subjects
            continue
        subjects.update(info.config.subjects or ())
        for c in await bus.js.consumers_info(name):
            assert c.config.durable_name, f"{name} has an ephemeral consumer after start"
            durables.add((name, c.config.durable_name))
            subjects.add(c.config.filter_subject or "")
            subjects.update(c.config.filter_subjects or ())
    subjects.discard("")  # a consumer of a whole stream: its subjects are there already

    doc = asyncapi_document()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == subjects
    sent = {
        doc["channels"][op["channel"]["$ref"].removeprefix("#/channels/")]["address"]
        for op in doc["operations"].values()
        if op["action"] == "send"
    }
    assert sent == {s for info in STREAMS.values() for s in info.subjects}
    receivers = {
        (op["x-jetstream"]["stream"], op["x-jetstream"]["durable"])
        for op in doc["operations"].values()
        if op["action"] == "receive"
    }
    assert receivers == durables
    for op in doc["operations"].values():
        assert op["channel"]["$ref"].removeprefix("#/channels/") in doc["channels"]


def test_schema_command(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(cli(), ["schema", "--asyncapi"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["asyncapi"].startswith("3.")
    out = runner.invoke(cli(), ["schema", "--json"])
    assert "event.update.schema.json" in json.loads(out.stdout)
    out = runner.invoke(cli(), ["schema", "--out", str(tmp_path)])
    assert out.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["asyncapi.json", *json_schemas()])
    assert runner.invoke(cli(), ["schema"]).exit_code == 2


def test_tokens_commands(nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPACTBUS_NATS_URL", nats_server.url)
    runner = CliRunner()
    created = runner.invoke(
        cli(),
        [
            "tokens",
            "create",
            "--role",
            "partner",
            "--initiative",
            "somerville",
            "--recipient",
            "maria",
            "--label",
            "portal",
        ],
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("ib_")
    token_id = token.split("_")[1]
    listed = runner.invoke(cli(), ["tokens", "list", "--json"])
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["id"], row["role"], row["revoked"]) == (token_id, "partner", False)
    assert "hash" not in row
    assert token.split("_", 2)[2] not in listed.stdout
    assert runner.invoke(cli(), ["tokens", "revoke", token_id]).exit_code == 0
    assert "revoked" in runner.invoke(cli(), ["tokens", "list"]).stdout
    bad = runner.invoke(cli(), ["tokens", "create", "--role", "backbone"])
    assert bad.exit_code == 2
    assert "initiative" in bad.output
    assert runner.invoke(cli(), ["tokens", "revoke", "0123456789abcdef"]).exit_code == 2
