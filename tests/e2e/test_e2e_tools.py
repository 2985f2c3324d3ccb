"""Tool calling on the real default model through the real server: the calls that must happen
happen, their arguments always parse and match the schemas, and the conversation goes on."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import BaseModel

from tests.e2e.helpers import MODEL

pytestmark = pytest.mark.slow

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
TIME_PARAMS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a city", "parameters": TIME_PARAMS}},
]
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK = [{"role": "user", "content": "What is the weather in Paris and the time in Tokyo?"}]


def _check_calls(calls) -> None:
    assert calls
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), {**SCHEMAS[call.function.name], "additionalProperties": False})


@pytest.mark.parametrize("seed", [1, 2])
def test_required_gives_calls_whose_arguments_validate(client, seed: int) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=150, seed=seed
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    _check_calls(choice.message.tool_calls)


def test_a_named_function_is_the_one_called(client) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=100)
    calls = response.choices[0].message.tool_calls
    _check_calls(calls)
    assert [c.function.name for c in calls] == ["get_time"]


def test_parallel_calls_false_gives_one_call_true_may_give_more(client) -> None:
    for seed in range(3):
        single = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, seed=seed, max_tokens=150
        )
        assert len(single.choices[0].message.tool_calls) == 1
    several = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Call get_weather for Paris and get_time for Tokyo."}],
        tools=TOOLS,
        tool_choice="required",
        max_tokens=200,
        seed=3,
    )
    calls = several.choices[0].message.tool_calls
    _check_calls(calls)
    assert len({c.id for c in calls}) == len(calls)


def test_none_makes_no_call(client) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=30)
    assert response.choices[0].message.tool_calls is None and response.choices[0].message.content


def test_the_loop_call_then_result_then_answer(client) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=150)
    message = first.choices[0].message
    results = [{"role": "tool", "tool_call_id": c.id, "content": json.dumps({"result": "21 degrees"})} for c in message.tool_calls]
    follow_up = [*ASK, message.model_dump(exclude_none=True), *results]
    answer = client.chat.completions.create(
        model=MODEL, messages=follow_up, tools=TOOLS, tool_choice="none", max_tokens=40, extra_body={"raw_output": True}
    )
    assert answer.choices[0].message.content and answer.choices[0].finish_reason in ("stop", "length")
    prompt = answer.choices[0].model_extra["raw_output"]["prompt_fragments"][0]
    assert "21 degrees" in prompt and message.tool_calls[0].function.name in prompt


def test_streamed_calls_assemble_with_the_stream_helper(client) -> None:
    with client.chat.completions.stream(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=150) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    _check_calls(final.choices[0].message.tool_calls)


def test_auto_lets_the_model_answer_or_call_but_a_call_always_parses(client) -> None:
    for seed in range(4):
        choice = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, max_tokens=120, seed=seed, temperature=1.0
        ).choices[0]
        if choice.message.tool_calls:
            _check_calls(choice.message.tool_calls)
        assert "<tool_call>" not in (choice.message.content or "")


def test_langchain_bind_tools_and_function_calling_structured_output(server) -> None:
    from langchain_core.tools import tool
    from langchain_fireworks import ChatFireworks

    @tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    llm = ChatFireworks(model=MODEL, base_url=f"{server.url}/inference", api_key="e2e", max_tokens=80, temperature=0)
    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    assert isinstance(message.tool_calls[0]["args"]["city"], str)

    class Person(BaseModel):
        name: str
        age: int

    person = llm.with_structured_output(Person, method="function_calling").invoke("Extract the person: Bob, age 30.")
    assert isinstance(person, Person)
