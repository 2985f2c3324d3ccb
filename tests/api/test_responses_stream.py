"""Streamed responses: typed events in order with sequence numbers, the SDK's accumulated final
response, engine failure, and a client that goes away (stored `cancelled`, engine request aborted)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import wait_until

MODEL = "accounts/fireworks/models/fake-chatml"
OPENING = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
CLOSING = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def _types(events: list) -> list[str]:
    """Event types with runs of text deltas collapsed to one."""
    types: list[str] = []
    for event in events:
        if not (types and event.type == types[-1] == "response.output_text.delta"):
            types.append(event.type)
    return types


def test_events_in_order_with_sequence_numbers(client, server) -> None:
    events = list(client.responses.create(model=MODEL, input="Tell me a story", stream=True))
    assert _types(events) == [*OPENING, "response.output_text.delta", *CLOSING, "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 3 and "".join(deltas) == server.engine.reply
    created, completed = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.usage is None
    assert completed.id == created.id and completed.status == "completed" and completed.output_text == "".join(deltas)
    num_output = len(server.engine.reply_ids(server.engine.submitted[0])) + 1  # and the EOS
    assert completed.usage.output_tokens == completed.usage.completion_tokens == num_output
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {completed.output[0].id}


def test_stream_helper_accumulates_the_final_response(client, server) -> None:
    with client.responses.stream(model=MODEL, input="Tell me a story", instructions="Be kind.") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.output_text == "".join(texts) == server.engine.reply
    assert final.status == "completed" and final.instructions == "Be kind."
    stored = client.responses.retrieve(final.id)
    assert stored.status == "completed" and stored.output_text == final.output_text
    assert stored.usage.output_tokens == final.usage.output_tokens and server.records[0].endpoint == "responses"


def test_stream_hitting_max_output_tokens_ends_incomplete(client, server) -> None:
    events = list(client.responses.create(model=MODEL, input="Hi", stream=True, max_output_tokens=4))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-2].item.status == "incomplete" and events[-1].response.usage.output_tokens == 4
    assert client.responses.retrieve(events[-1].response.id).status == "incomplete"


def test_stream_logprobs_per_delta(client, server) -> None:
    events = list(client.responses.create(
        model=MODEL, input="Hi", stream=True, max_output_tokens=3, include=["message.output_text.logprobs"],
        top_logprobs=1,
    ))  # fmt: skip
    delta_logprobs = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    final = events[-1].response.output[0].content[0].logprobs
    assert len(delta_logprobs) == len(final) == 3
    assert [lp.token for lp in delta_logprobs] == [lp.token for lp in final]


def test_engine_failure_ends_the_stream_with_response_failed(client, server) -> None:
    server.engine.fail_after = 3
    events = list(client.responses.create(model=MODEL, input="Tell me a story", stream=True))
    assert events[-1].type == "response.failed" and events[-1].sequence_number == len(events) - 1
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error" and failed.usage.output_tokens == 3
    stored = client.responses.retrieve(failed.id)
    assert stored.status == "failed" and stored.output_text == failed.output_text != ""


def test_client_leaving_mid_stream_cancels_the_stored_response(client, server) -> None:
    server.engine.token_delay = 0.005
    stream = client.responses.create(
        model=MODEL, input="Tell me a story", stream=True, max_output_tokens=2000, extra_body={"ignore_eos": True}
    )
    response_id, deltas = None, 0
    for event in stream:
        if response_id is None:  # stored before the client learns the id
            response_id = event.response.id
            assert client.responses.retrieve(response_id).status == "in_progress"
        deltas += event.type == "response.output_text.delta"
        if deltas == 5:
            stream.close()
            break
    assert wait_until(lambda: not server.engine.running), "the engine still runs the abandoned request"
    assert server.engine.aborted and wait_until(lambda: len(server.records) == 1)
    assert wait_until(lambda: client.responses.retrieve(response_id).status != "in_progress")
    stored = client.responses.retrieve(response_id)
    assert stored.status == "cancelled" and stored.output[0].status == "incomplete"
    assert 5 <= stored.usage.output_tokens < 2000 and stored.usage.output_tokens == server.records[0].completion_tokens
    assert server.records[0].aborted


def test_sse_framing_on_the_wire(server) -> None:
    body = {"model": MODEL, "input": "Hi", "stream": True, "max_output_tokens": 2}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        response = http.post("/v1/responses", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = response.text.strip().split("\n\n")
    assert blocks[0].startswith("event: response.created\ndata: {")
    assert all(b.split("\n")[0].removeprefix("event: ") in b.split("\n")[1] for b in blocks)
    assert "[DONE]" not in response.text and blocks[-1].startswith("event: response.incomplete\n")


def test_stream_errors_before_the_first_token_are_http_errors(client, server) -> None:
    server.engine.queue_full = True
    with pytest.raises(openai.RateLimitError):
        list(client.responses.create(model=MODEL, input="Hi", stream=True))
    assert server.records[0].status_code == 429


def test_client_leaving_a_non_streamed_request_aborts_it_and_stores_nothing(client, server) -> None:
    server.engine.token_delay = 0.01
    body = {"model": MODEL, "input": "Hi", "max_output_tokens": 1000, "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/responses", json=body)
    assert wait_until(lambda: len(server.engine.aborted) == 1 and not server.engine.running)
    assert wait_until(lambda: len(server.records) == 1)
    assert server.records[0].aborted and server.records[0].status_code == 499
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(f"resp_{server.records[0].request_id}")
