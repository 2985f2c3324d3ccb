"""Tool calling on Chat Completions through the real server and the `openai` SDK, over a fake
engine whose reply is scripted: the shapes of calls, whole and streamed, and the 400s."""

from __future__ import annotations

import json

import openai
import pytest

MODEL = "accounts/fireworks/models/fake-chatml"
ASK = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
CALLS = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]</tool_call>'


@pytest.fixture
def tools_server(server, monkeypatch):
    monkeypatch.setattr(server.engine, "max_model_len", 4096)  # room for the default tool prompt
    return server


def test_calls_are_parsed_out_of_the_text(client, tools_server) -> None:
    tools_server.engine.reply = "Let me check. " + CALLS
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME])
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check. "
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") and c.type == "function" for c in calls)


def test_a_call_only_answer_has_no_content(client, tools_server) -> None:
    tools_server.engine.reply = CALLS
    message = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME]).choices[0].message
    assert message.content is None and len(message.tool_calls) == 2


def test_streamed_calls_follow_openai_shape_and_no_markup_leaks(client, tools_server) -> None:
    tools_server.engine.reply = "Sure. " + CALLS
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], stream=True)
    content, calls, finish = "", {}, None
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                if call.id is not None:  # a call's first delta: index, id, type and name
                    assert call.type == "function" and call.function.name and call.index not in calls
                    calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
                calls[call.index]["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert content == "Sure. " and "<" not in content
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert finish == "tool_calls"


def test_the_stream_helper_assembles_the_calls(client, tools_server) -> None:
    tools_server.engine.reply = CALLS
    with client.chat.completions.stream(model=MODEL, messages=ASK, tools=[WEATHER, TIME]) as stream:
        final = stream.get_final_completion()
    assert [c.function.name for c in final.choices[0].message.tool_calls] == ["get_weather", "get_time"]


def test_tool_choice_none_leaves_the_text_alone(client, tools_server) -> None:
    tools_server.engine.reply = CALLS
    choice = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none").choices[0]
    assert choice.message.tool_calls is None and choice.message.content == CALLS and choice.finish_reason == "stop"
    assert tools_server.engine.submitted[0].structured_output is None


def test_the_grammar_goes_with_the_request(client, tools_server) -> None:
    client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    spec = tools_server.engine.submitted[0].structured_output
    assert spec.syntax == "lark" and '"get_time"' in spec.source and '"get_weather"' not in spec.source


def test_tools_are_in_the_prompt_and_past_calls_in_the_assistant_turn(client, tools_server) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [*ASK, {"role": "assistant", "tool_calls": [call]}, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    response = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], extra_body={"raw_output": True}
    )
    prompt = response.choices[0].model_extra["raw_output"]["prompt_fragments"][0]
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>' in prompt
    assert "<|im_start|>tool\nsunny" in prompt


def test_deprecated_functions_become_tools(client, tools_server) -> None:
    tools_server.engine.reply = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]</tool_call>'
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, functions=[WEATHER["function"]], function_call={"name": "get_weather"}
    )
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, "tools[0].parameters"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_bad_tool_requests_are_a_400_naming_the_field(client, tools_server, extra, param) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, extra_body=extra)
    assert caught.value.body["param"] == param
    assert not tools_server.engine.submitted


def test_a_tool_message_must_answer_an_earlier_call(client, tools_server) -> None:
    messages = [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "sunny"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert caught.value.body["param"] == "messages[1].tool_call_id"
