"""The Anthropic Messages API on the real default model, through `firebox serve` and the real
`anthropic` SDK: a plain answer, the same answer streamed, and a forced tool call whose input
validates against the tool's schema whatever the model would rather say."""

from __future__ import annotations

from typing import Any

import anthropic
import jsonschema
import pytest

from tests.e2e.helpers import MODEL

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0.0}  # this SDK version sends sampling fields as extra_body
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


@pytest.fixture
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{server.url}/inference", api_key="e2e", max_retries=0)


def test_a_plain_message(claude) -> None:
    message = claude.messages.create(
        model=MODEL, max_tokens=24, messages=ASK, system="Answer briefly.", extra_body=GREEDY
    )
    assert [block.type for block in message.content] == ["text"] and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens") and 0 < message.usage.output_tokens <= 24
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens > 10


def test_a_streamed_message_is_the_whole_one(claude) -> None:
    whole = claude.messages.create(model=MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY)
    with claude.messages.stream(model=MODEL, max_tokens=16, messages=ASK, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


def test_a_forced_tool_use_validates_against_its_schema(claude) -> None:
    ask = [{"role": "user", "content": "How warm is it in Paris?"}]
    message = claude.messages.create(
        model=MODEL, max_tokens=80, messages=ask, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}
    )
    assert message.stop_reason == "tool_use"
    call = message.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER["input_schema"])
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees and sunny"}
    turns = [*ask, {"role": "assistant", "content": message.content}, {"role": "user", "content": [result]}]
    answer = claude.messages.create(
        model=MODEL, max_tokens=24, messages=turns, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert answer.content[0].type == "text" and answer.stop_reason in ("end_turn", "max_tokens")
