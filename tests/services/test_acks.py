"""Pipelined publishes through the acknowledgement multiplexer, on a real nats-server."""

from __future__ import annotations

import nats
import nats.errors
import nats.js.errors
import pytest

from services.bus import EVENTS, Bus, EmbeddedNats
from services.bus.acks import Ack, ack_mux, publish_acked
from services.bus.natsclient import Client as DirectClient


async def test_each_publish_gets_its_own_acknowledgement_in_order(bus: Bus) -> None:
    mux = ack_mux(bus.nc)
    tokens = [
        await mux.publish(f"impact.acks.update.t{i}", b"{}", {"Nats-Msg-Id": f"m{i}"})
        for i in range(500)
    ]

    acks = await mux.gather(tokens, 5)

    assert all(isinstance(a, Ack) for a in acks)
    seqs = [a.seq for a in acks if isinstance(a, Ack)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 500
    stored = await bus.js.get_msg(EVENTS, seqs[-1])
    assert stored.subject == "impact.acks.update.t499"


async def test_a_repeated_message_id_is_reported_as_a_duplicate(bus: Bus) -> None:
    mux = ack_mux(bus.nc)
    first = await mux.publish("impact.acks.update.x", b"1", {"Nats-Msg-Id": "same"})
    [a] = await mux.gather([first], 5)
    again = await mux.publish("impact.acks.update.x", b"2", {"Nats-Msg-Id": "same"})
    [b] = await mux.gather([again], 5)

    assert isinstance(a, Ack)
    assert isinstance(b, Ack)
    assert (a.duplicate, b.duplicate) == (False, True)
    assert b.seq == a.seq


async def test_errors_come_back_per_message(bus: Bus) -> None:
    mux = ack_mux(bus.nc)
    ok = await mux.publish("impact.acks.update.ok", b"{}")
    no_stream = await mux.publish("nowhere.at.all", b"{}")
    wrong = await mux.publish("impact.acks.update.y", b"{}", {"Nats-Expected-Stream": "NOT_EVENTS"})

    outcomes = await mux.gather([ok, no_stream, wrong], 5)

    assert isinstance(outcomes[0], Ack)
    assert isinstance(outcomes[1], nats.js.errors.NoStreamResponseError)
    assert isinstance(outcomes[2], nats.js.errors.APIError)
    assert "stream" in str(outcomes[2].description).lower()


async def test_an_acknowledgement_that_never_comes_times_out_and_is_forgotten(bus: Bus) -> None:
    sink = await bus.nc.subscribe("quiet.subject")  # takes the message, never answers
    mux = ack_mux(bus.nc)

    token = await mux.publish("quiet.subject", b"{}")
    [outcome] = await mux.gather([token], 0.3)

    assert isinstance(outcome, TimeoutError)
    assert token not in mux._futures
    await sink.unsubscribe()


async def test_publishing_on_a_closed_connection_raises(bus: Bus) -> None:
    mux = ack_mux(bus.nc)
    await mux.gather([await mux.publish("impact.acks.update.z", b"{}")], 5)
    await bus.nc.close()

    with pytest.raises(nats.errors.ConnectionClosedError):
        await mux.publish("impact.acks.update.z", b"{}")


async def test_publish_acked_returns_the_ack_or_raises_the_refusal(bus: Bus) -> None:
    ack = await publish_acked(bus.nc, "impact.acks.update.one", b"{}", None, 5)
    assert (await bus.js.get_msg(EVENTS, ack.seq)).subject == "impact.acks.update.one"

    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await publish_acked(bus.nc, "nowhere.at.all", b"{}", None, 5)


async def test_a_plain_nats_py_connection_is_refused_with_a_clear_error(
    nats_server: EmbeddedNats,
) -> None:
    plain = await nats.connect(nats_server.url)
    try:
        assert not isinstance(plain, DirectClient)
        with pytest.raises(TypeError, match=r"services\.bus\.natsclient\.Client"):
            await ack_mux(plain).publish("impact.acks.update.plain", b"{}")
    finally:
        await plain.close()


async def test_an_api_request_gets_its_json_answer_or_its_error(bus: Bus) -> None:
    mux = ack_mux(bus.nc)
    await publish_acked(bus.nc, "impact.acks.update.purged", b"{}", None, 5)
    info = await mux.request("$JS.API.STREAM.INFO." + EVENTS, b"")
    missing = await mux.request("$JS.API.STREAM.INFO.NO_SUCH_STREAM", b"")
    answer, error = await mux.answers([info, missing], 5)
    assert isinstance(answer, dict)
    assert answer["config"]["name"] == EVENTS
    assert answer["state"]["messages"] >= 1
    assert isinstance(error, nats.js.errors.APIError)
    assert error.code == 404
