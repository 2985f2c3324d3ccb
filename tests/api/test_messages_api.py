"""The Anthropic Messages API through the real server and the real `anthropic` SDK, over a fake
engine whose reply is scripted: answer shapes, stop reasons, system prompts, tools (tool_use out,
tool_result in), streaming events and the SDK's stream helper, count_tokens, x-api-key, and
errors in Anthropic's shape."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import API_KEY
from tests.fakes import REPLY, thinking_tokenizer

MODEL = "accounts/fireworks/models/fake-chatml"
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
CALL = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>'
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def _client(server: Any, **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("api_key", API_KEY)
    return anthropic.Anthropic(base_url=f"{server.url}/inference", max_retries=0, **kwargs)


@pytest.fixture
def claude(server) -> anthropic.Anthropic:
    return _client(server)


@pytest.fixture
def tools_server(server, monkeypatch):
    monkeypatch.setattr(server.engine, "max_model_len", 4096)  # room for the default tool prompt
    return server


def _post(server: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30)


def _last_prompt(server: Any) -> str:
    """The text of the prompt the engine got last, special tokens and all."""
    return server.engine.tokenizer.decode(server.engine.submitted[-1].prompt_token_ids, skip_special_tokens=False)


# --- answers ---------------------------------------------------------------------------------


def test_a_message_has_anthropic_shape_and_is_recorded(claude, server) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=100, messages=HELLO, metadata={"user_id": "u-1"})
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text"] and message.content[0].text == REPLY
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    prompt_tokens = len(server.engine.submitted[-1].prompt_token_ids)
    usage = message.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == prompt_tokens
    assert usage.output_tokens == len(server.engine.tokenizer.encode(REPLY)) + 1  # and the end-of-turn token
    record = server.records[-1]
    assert record.endpoint == "messages" and record.user == "u-1" and record.status_code == 200
    assert record.prompt_tokens == prompt_tokens and record.completion_tokens == usage.output_tokens


def test_max_tokens_ends_with_max_tokens(claude, server) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_a_stop_sequence_is_named(claude, server) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=100, messages=HELLO, stop_sequences=["tiny", "zebra"])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "tiny"
    text = message.content[0].text
    assert text.startswith("Once upon a time a ") and "tiny" not in text  # (the fake holds no partial stop back)


def test_max_tokens_is_optional(server) -> None:
    response = _post(server, "/v1/messages", {"model": MODEL, "messages": HELLO})
    assert response.status_code == 200 and response.json()["stop_reason"] == "end_turn"


def test_sampling_fields_reach_the_engine(claude, server) -> None:
    sampling = {"temperature": 0.5, "top_p": 0.9, "top_k": 7}  # this SDK version sends them as extra_body
    claude.messages.create(model=MODEL, max_tokens=5, messages=HELLO, extra_body=sampling)
    sampling = server.engine.submitted[-1].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_tokens) == (0.5, 0.9, 7, 5)


@pytest.mark.parametrize(
    "system",
    [
        "Be brief.",
        [
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}},
        ],
    ],
)
def test_system_prompt_as_string_or_blocks(claude, server, system) -> None:
    claude.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)
    prompt = _last_prompt(server)
    assert prompt.startswith("<|im_start|>system\nBe brief.") and "helpful AI assistant" not in prompt
    if isinstance(system, list):
        assert "Be brief.\nBe kind.<|im_end|>" in prompt


def test_multi_turn_conversation_with_content_blocks(claude, server) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi there"}]},
        {"role": "user", "content": "Tell me a story"},
    ]
    claude.messages.create(model=MODEL, max_tokens=5, messages=messages)
    turns = "user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nTell me a story"
    assert turns in _last_prompt(server)


# --- tools -----------------------------------------------------------------------------------


def test_a_call_is_a_tool_use_block(claude, tools_server) -> None:
    tools_server.engine.reply = "Let me check. " + CALL
    message = claude.messages.create(model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER, TIME])
    assert message.stop_reason == "tool_use"
    text, call = message.content
    assert text.type == "text" and text.text == "Let me check. "
    assert call.type == "tool_use" and call.id.startswith("toolu_") and call.name == "get_weather"
    assert call.input == {"city": "Paris"}
    assert tools_server.engine.submitted[-1].structured_output is not None  # the calls' grammar


@pytest.mark.parametrize("tool_choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
def test_forced_tool_choices_are_constrained(claude, tools_server, tool_choice) -> None:
    tools_server.engine.reply = CALL
    message = claude.messages.create(
        model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER, TIME], tool_choice=tool_choice
    )
    assert [block.type for block in message.content] == ["tool_use"] and message.stop_reason == "tool_use"
    grammar = tools_server.engine.submitted[-1].structured_output.source
    assert not grammar.startswith("%llguidance")  # the whole output is the call, no free text first
    if tool_choice["type"] == "tool":
        assert "get_time" not in grammar


def test_tool_choice_none_leaves_the_text_alone(claude, tools_server) -> None:
    tools_server.engine.reply = CALL
    message = claude.messages.create(
        model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert message.stop_reason == "end_turn" and message.content[0].text == CALL
    assert tools_server.engine.submitted[-1].structured_output is None


def test_a_tool_loop_sends_the_call_and_its_result(claude, tools_server) -> None:
    tools_server.engine.reply = CALL
    first = claude.messages.create(model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER])
    call = first.content[-1]
    tools_server.engine.reply = "It is 18 degrees."
    result = {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "18 degrees"}]}
    messages = [*ASK, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = claude.messages.create(model=MODEL, max_tokens=200, messages=messages, tools=[WEATHER])
    assert second.content[0].text == "It is 18 degrees." and second.stop_reason == "end_turn"
    prompt = _last_prompt(tools_server)  # the call as the model writes it, then its result
    assert 'assistant\n<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>' in prompt
    assert "<|im_start|>tool\n18 degrees<|im_end|>" in prompt


def test_a_streamed_call_is_a_tool_use_block(claude, tools_server) -> None:
    tools_server.engine.reply = "Sure. " + CALL
    with claude.messages.stream(model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [("text", "Sure. "), ("tool_use", None)]
    assert final.content[1].input == {"city": "Paris"} and final.content[1].id.startswith("toolu_")
    assert "input_json" in events  # the SDK's event for an input_json_delta


# --- streaming -------------------------------------------------------------------------------


def test_stream_events_in_anthropic_order(claude, server) -> None:
    stream = claude.messages.create(model=MODEL, max_tokens=100, messages=HELLO, stream=True)
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    start = events[0].message
    assert start.content == [] and start.stop_reason is None and start.usage.input_tokens > 0
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == REPLY
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens > 0
    assert server.records[-1].endpoint == "messages"


def test_stream_helper_assembles_the_final_message(claude, server) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=100, messages=HELLO, stop_sequences=["tiny"]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text and text.startswith("Once upon a time a ") and "tiny" not in text
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "tiny"
    assert final.usage.output_tokens == server.records[-1].completion_tokens > 0


def test_sse_framing_on_the_wire(server) -> None:
    body = {"model": MODEL, "max_tokens": 2, "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/messages", json=body, timeout=30) as response:
        raw = response.read().decode()
    frames = [frame for frame in raw.split("\n\n") if frame]
    first_event, first_data = frames[0].split("\n")
    assert first_event == "event: message_start"
    assert json.loads(first_data.removeprefix("data: "))["type"] == "message_start"
    assert frames[-1].startswith("event: message_stop") and "[DONE]" not in raw


def test_an_engine_failure_mid_stream_is_an_error_event(claude, server) -> None:
    server.engine.fail_after = 2
    with pytest.raises(anthropic.APIStatusError) as info:
        list(claude.messages.create(model=MODEL, max_tokens=100, messages=HELLO, stream=True))
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "overloaded_error"


# --- count_tokens, auth ----------------------------------------------------------------------


def test_count_tokens_matches_the_prompt_a_request_sends(claude, tools_server) -> None:
    counted = claude.messages.count_tokens(model=MODEL, system="Be brief.", messages=HELLO).input_tokens
    claude.messages.create(model=MODEL, max_tokens=1, system="Be brief.", messages=HELLO)
    assert counted == len(tools_server.engine.submitted[-1].prompt_token_ids)
    with_tools = claude.messages.count_tokens(model=MODEL, system="Be brief.", messages=HELLO, tools=[WEATHER])
    assert with_tools.input_tokens > counted  # the tool prompt counts
    assert _post(tools_server, "/v1/messages/count_tokens", {"model": MODEL, "messages": HELLO}).status_code == 200


def test_x_api_key_and_bearer_both_authenticate(keyed_server) -> None:
    assert _client(keyed_server).messages.create(model=MODEL, max_tokens=1, messages=HELLO).content
    bearer = _client(keyed_server, api_key=None, auth_token=API_KEY)
    assert bearer.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens > 0
    with pytest.raises(anthropic.AuthenticationError) as info:
        _client(keyed_server, api_key="wrong").messages.create(model=MODEL, max_tokens=1, messages=HELLO)
    assert info.value.body == {"type": "error", "error": {"type": "authentication_error", "message": "Invalid API key"}}


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"messages": None}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"temperature": 1.5}, "temperature"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "'nope'"),
        ({"tool_choice": {"type": "any"}}, "tool_choice needs tools"),
        ({"tools": [{**WEATHER, "input_schema": {"type": "array"}}]}, "input_schema"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "'image'"),
        ({"messages": [*HELLO, {"role": "assistant", "content": "The"}]}, "prefilled"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]}, "tool_use_id"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
        ({"thinking": {"type": "adaptive"}}, "thinking"),  # the fake model does not think
    ],
)
def test_bad_input_is_an_anthropic_shaped_400(server, body, words) -> None:
    body = {key: value for key, value in {"model": MODEL, "messages": HELLO, **body}.items() if value is not None}
    response = _post(server, "/inference/v1/messages", body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"type", "error"} and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error" and words in error["error"]["message"]


def test_thinking_disabled_and_earlier_thinking_blocks_pass(claude, server) -> None:
    thought = {"type": "thinking", "thinking": "Hm.", "signature": ""}
    earlier = {"role": "assistant", "content": [thought, {"type": "text", "text": "Hi"}]}
    messages = [*HELLO, earlier, {"role": "user", "content": "Again"}]
    message = claude.messages.create(model=MODEL, max_tokens=5, messages=messages, thinking={"type": "disabled"})
    assert message.stop_reason == "max_tokens"


def test_block_stream_orders_thinking_text_and_calls() -> None:
    from firebox.serving.messages.output import BlockStream
    from firebox.serving.output_parsing import ParsedDelta, ToolCallDelta

    blocks = BlockStream()
    events = blocks.feed(ParsedDelta(reasoning="Hm"))
    events += blocks.feed(ParsedDelta(reasoning=".", content="Sure"))
    events += blocks.feed(ParsedDelta(tool_calls=[ToolCallDelta(0, "call_1", "get_time", "{}")]))
    events += blocks.finish()
    parts = [getattr(e, "content_block", None) or getattr(e, "delta", None) for e in events]
    shapes = [(e.type, e.index, getattr(part, "type", None)) for e, part in zip(events, parts)]
    assert shapes == [
        ("content_block_start", 0, "thinking"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
    ]
    assert events[7].content_block.id == "toolu_1" and BlockStream().finish()[0].content_block.type == "text"


@pytest.fixture
def qwen3(server, monkeypatch):
    """The fake engine speaking through Qwen3's chat template: a model that thinks."""
    monkeypatch.setattr(server.engine, "tokenizer", thinking_tokenizer())
    monkeypatch.setattr(server.engine, "max_model_len", 4096)
    server.engine.reply = "<think>\nTwo and two. Four.\n</think>\n\nThe answer is 4."
    return server


def test_a_thinking_models_thinking_is_a_thinking_block(claude, qwen3) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=200, messages=HELLO, thinking={"type": "adaptive"})
    assert [(b.type, getattr(b, "thinking", None) or b.text) for b in message.content] == [
        ("thinking", "Two and two. Four."),
        ("text", "The answer is 4."),
    ]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == qwen3.records[-1].completion_tokens
    with claude.messages.stream(model=MODEL, max_tokens=200, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].thinking == "Two and two. Four."


def test_thinking_off_and_budgets_on_a_thinking_model(claude, qwen3) -> None:
    claude.messages.create(model=MODEL, max_tokens=5, messages=HELLO, thinking={"type": "disabled"})
    assert _last_prompt(qwen3).endswith("<think>\n\n</think>\n\n")  # Qwen3's prompt closes the thinking
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model=MODEL, max_tokens=5, messages=HELLO, thinking={"type": "enabled", "budget_tokens": 1024}
        )
    assert "budget" in info.value.body["error"]["message"]


def test_sdk_raises_its_bad_request_error(claude, server) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "tool", "content": "x"}])
    assert info.value.body["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_a_404_not_found_error(claude, server) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=HELLO)
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such-model", messages=HELLO)


def test_other_routes_keep_openai_shaped_errors(server) -> None:
    response = _post(server, "/v1/chat/completions", {"model": MODEL})
    assert response.status_code == 400 and "message" in response.json()["error"] and "type" not in response.json()
