"""Function tools on the Responses API through the real server and the `openai` SDK, over a fake
engine whose reply is scripted (the fake ChatML template gets firebox's default JSON-list
format): function_call items whole and streamed, the round trip with function_call_output (in
the input and across previous_response_id), max_tool_calls, and the 400s."""

from __future__ import annotations

import json

import httpx
import pytest

MODEL = "accounts/fireworks/models/fake-chatml"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
PARIS = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ONE_CALL = f"<tool_call>[{PARIS}]</tool_call>"
TWO_CALLS = f'<tool_call>[{PARIS}, {{"name": "get_time", "arguments": {{}}}}]</tool_call>'


@pytest.fixture
def tools_server(server, monkeypatch):
    monkeypatch.setattr(server.engine, "max_model_len", 4096)  # room for the default tool prompt
    return server


def _prompt(server, index: int = -1) -> str:
    return server.engine.tokenizer.decode(server.engine.submitted[index].prompt_token_ids, skip_special_tokens=False)


def _grammar(server) -> str | None:
    spec = server.engine.submitted[-1].structured_output
    return None if spec is None else spec.source


def _post(server, body: dict) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        return http.post("/v1/responses", json=body)


def test_calls_are_function_call_items_after_the_text(client, tools_server) -> None:
    tools_server.engine.reply = "Let me check. " + TWO_CALLS
    response = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER, TIME])
    message, weather, time = response.output
    assert message.type == "message" and response.output_text == "Let me check. "
    assert [(c.type, c.name, json.loads(c.arguments), c.status) for c in (weather, time)] == [
        ("function_call", "get_weather", {"city": "Paris"}, "completed"),
        ("function_call", "get_time", {}, "completed"),
    ]
    assert all(c.id.startswith("fc_") and c.call_id.startswith("call_") for c in (weather, time))
    assert weather.call_id != time.call_id and response.status == "completed"
    assert "get_weather" in _prompt(tools_server) and "<tool_call>" in _grammar(tools_server)
    assert response.tools[0].name == "get_weather" and response.tools[0].strict is True
    assert response.tool_choice == "auto" and response.parallel_tool_calls is True


def test_a_call_only_answer_has_no_message(client, tools_server) -> None:
    tools_server.engine.reply = ONE_CALL
    response = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])
    assert [item.type for item in response.output] == ["function_call"] and response.output_text == ""


def test_named_and_required_choices_force_the_grammar(client, tools_server) -> None:
    tools_server.engine.reply = ONE_CALL
    named = {"type": "function", "name": "get_weather"}
    response = client.responses.create(model=MODEL, input="Hi", tools=[WEATHER, TIME], tool_choice=named)
    assert response.tool_choice.type == "function" and response.tool_choice.name == "get_weather"
    grammar = _grammar(tools_server)
    assert grammar.startswith('start: "<tool_call>"') and "get_weather" in grammar and "get_time" not in grammar
    response = client.responses.create(model=MODEL, input="Hi", tools=[WEATHER, TIME], tool_choice="required")
    assert response.tool_choice == "required" and "get_time" in _grammar(tools_server)


def test_tool_choice_none_leaves_the_text_alone(client, tools_server) -> None:
    tools_server.engine.reply = ONE_CALL
    response = client.responses.create(
        model=MODEL, input="Hi", tools=[WEATHER], tool_choice="none", include=["message.output_text.logprobs"]
    )
    assert [item.type for item in response.output] == ["message"] and response.output_text == ONE_CALL
    assert _grammar(tools_server) is None and "get_weather" in _prompt(tools_server)


def test_one_call_at_most(client, tools_server) -> None:
    tools_server.engine.reply = TWO_CALLS  # what the fake says; a real model's grammar allows one call
    response = client.responses.create(model=MODEL, input="Hi", tools=[WEATHER, TIME], max_tool_calls=1)
    assert [item.name for item in response.output] == ["get_weather"] and response.max_tool_calls == 1
    assert '"maxItems":1' in _grammar(tools_server).replace(" ", "")
    response = client.responses.create(model=MODEL, input="Hi", tools=[WEATHER, TIME], parallel_tool_calls=False)
    assert response.parallel_tool_calls is False and '"maxItems":1' in _grammar(tools_server).replace(" ", "")


def test_max_tool_calls_leaves_out_the_calls_past_it(client, tools_server) -> None:
    tools_server.engine.reply = f"<tool_call>[{PARIS}, {PARIS}, {PARIS}]</tool_call>"
    response = client.responses.create(model=MODEL, input="Hi", tools=[WEATHER], max_tool_calls=2)
    assert [item.type for item in response.output] == ["function_call", "function_call"]


def test_streamed_events_in_openai_order(client, tools_server) -> None:
    tools_server.engine.reply = "Let me check. " + TWO_CALLS
    events = list(client.responses.create(model=MODEL, input="Weather?", tools=[WEATHER, TIME], stream=True))
    types = [e.type for e in events if e.type != "response.output_text.delta"]
    call_events = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert types == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        *call_events, *call_events, "response.completed",
    ]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Let me check. " and "<tool" not in text
    adds = [e for e in events if e.type == "response.output_item.added"]  # in output order
    assert [(e.output_index, e.item.type) for e in adds] == [(0, "message"), (1, "function_call"), (2, "function_call")]
    assert adds[1].item.arguments == "" and adds[1].item.status == "in_progress"
    final = events[-1].response
    for index, call in ((1, final.output[1]), (2, final.output[2])):
        delta, done = (e for e in events if "function_call_arguments" in e.type and e.output_index == index)
        assert delta.item_id == done.item_id == call.id and delta.delta == done.arguments == call.arguments
    assert client.responses.retrieve(final.id).output == final.output


def test_stream_helper_accumulates_the_calls(client, tools_server) -> None:
    tools_server.engine.reply = ONE_CALL
    with client.responses.stream(model=MODEL, input="Weather?", tools=[WEATHER], tool_choice="required") as stream:
        arguments = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"} == json.loads(arguments[0])


def test_function_call_output_round_trip_in_the_input(client, tools_server) -> None:
    tools_server.engine.reply = ONE_CALL
    ask = {"role": "user", "content": "Weather in Paris?"}
    first = client.responses.create(model=MODEL, input=[ask], tools=[WEATHER], store=False)
    (call,) = first.output
    answer = {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}
    tools_server.engine.reply = "It is 18C and sunny in Paris."
    second = client.responses.create(
        model=MODEL, input=[ask, call.model_dump(exclude_none=True), answer], tools=[WEATHER]
    )
    assert second.output_text == "It is 18C and sunny in Paris."
    prompt = _prompt(tools_server)
    assert f"<|im_start|>assistant\n{ONE_CALL}<|im_end|>" in prompt.replace("\\n", "\n")
    assert "<|im_start|>tool\n18C and sunny<|im_end|>\n<|im_start|>assistant\n" in prompt
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]
    assert items[1].call_id == items[2].call_id == call.call_id and items[2].output == "18C and sunny"


def test_previous_response_id_carries_the_calls(client, tools_server) -> None:
    tools_server.engine.reply = "Sure. " + ONE_CALL
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])
    call = first.output[1]
    tools_server.engine.reply = "Sunny."
    answer = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input=[answer], tools=[WEATHER])
    assert second.output_text == "Sunny."
    prompt = _prompt(tools_server)
    assert f"<|im_start|>assistant\nSure. {ONE_CALL}<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>tool\nsunny<|im_end|>\n<|im_start|>assistant\n")
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items] == ["message", "message", "function_call", "function_call_output"]


BAD_JSON = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}
NAMELESS = {"type": "function_call", "call_id": "c", "arguments": "{}"}
WITH_ROLE = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "role": "user"}
IMAGE_OUTPUT = {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}
STRAY_OUTPUT = {"type": "function_call_output", "call_id": "nope", "output": "x"}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"tools": [WEATHER, {"type": "mcp", "server_label": "x", "server_url": "http://x"}]}, "tools"),
        ({"tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{**WEATHER, "parameters": {"type": "array"}}]}, "tools[0].parameters"),
        ({"tools": [WEATHER], "tool_choice": {"type": "mcp", "server_label": "x"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "get_weather"}}, "tool_choice"),
        ({"tools": [WEATHER], "include": ["message.output_text.logprobs"]}, "include"),
        ({"tools": [WEATHER], "text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"tools": [WEATHER], "max_tool_calls": 0}, "max_tool_calls"),
        ({"input": [{"role": "user", "content": "Hi"}, STRAY_OUTPUT]}, "input[1].call_id"),
        ({"input": [BAD_JSON]}, "input[0].arguments"),
        ({"input": [NAMELESS]}, "input[0].name"),
        ({"input": [WITH_ROLE]}, "input[0].role"),
        ({"input": [IMAGE_OUTPUT]}, "input[0].output[0]"),
    ],
)
def test_refusals_are_400s_naming_the_field(tools_server, change: dict, param: str) -> None:
    response = _post(tools_server, {"model": MODEL, "input": "Hi", **change})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert tools_server.engine.submitted == []


def test_server_side_tools_are_refused_by_name(tools_server) -> None:
    response = _post(tools_server, {"model": MODEL, "input": "Hi", "tools": [{"type": "file_search"}]})
    message = response.json()["error"]["message"]
    assert "'file_search'" in message and "only function tools" in message


def test_a_thinking_model_calls_after_its_thinking(client, server, monkeypatch) -> None:
    """Qwen3's template (Hermes calls, <think>): the thinking is a reasoning item, in neither the text
    nor the calls, and its tokens are counted as reasoning tokens."""
    from tests.fakes import thinking_tokenizer

    monkeypatch.setattr(server.engine, "tokenizer", thinking_tokenizer())
    monkeypatch.setattr(server.engine, "max_model_len", 4096)
    server.engine.reply = f'<think>\nParis, then.\n</think>\n\n<tool_call>\n{PARIS}\n</tool_call>'
    for stream in (False, True):
        if stream:
            response = list(client.responses.create(model=MODEL, input="Hi", tools=[WEATHER], stream=True))[-1].response
        else:
            response = client.responses.create(model=MODEL, input="Hi", tools=[WEATHER])
        assert [item.type for item in response.output] == ["reasoning", "function_call"]
        assert response.output[0].content[0].text.strip() == "Paris, then." and response.output[1].name == "get_weather"
        assert 0 < response.usage.output_tokens_details.reasoning_tokens < response.usage.output_tokens
    server.engine.reply = "<think>\nEasy.\n</think>\n\nHello."
    assert client.responses.create(model=MODEL, input="Hi").output_text == "Hello."
