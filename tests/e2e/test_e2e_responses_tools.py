"""Function tools on the Responses API with the real default model, through the real server: the
calls the request forces happen and their arguments validate, whole and streamed, the answer to
a call goes back in, and the OpenAI Agents SDK runs an agent whose tool really runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest

from tests.e2e.helpers import MODEL
from tests.e2e.test_e2e_tools import SCHEMAS
from tests.e2e.test_e2e_tools import TOOLS as CHAT_TOOLS

pytestmark = pytest.mark.slow

TOOLS = [{"type": "function", **tool["function"]} for tool in CHAT_TOOLS]  # the Responses API's flat form
ASK = "What is the weather in Paris?"


def _check_calls(output: list[Any]) -> list[Any]:
    calls = [item for item in output if item.type == "function_call"]
    assert calls, output
    for call in calls:
        closed = {**SCHEMAS[call.name], "additionalProperties": False}  # what the server enforces
        jsonschema.validate(json.loads(call.arguments), closed)
        assert call.status == "completed" and call.call_id.startswith("call_") and call.id.startswith("fc_")
    return calls


@pytest.mark.parametrize("seed", [1, 2])
def test_required_gives_function_calls_whose_arguments_validate(client, seed: int) -> None:
    response = client.responses.create(
        model=MODEL, input=ASK, tools=TOOLS, tool_choice="required", max_output_tokens=150, extra_body={"seed": seed}
    )
    assert response.status == "completed" and response.output_text == ""
    _check_calls(response.output)


def test_a_named_function_streamed(client) -> None:
    choice = {"type": "function", "name": "get_time"}
    with client.responses.stream(
        model=MODEL, input="What time is it in Tokyo?", tools=TOOLS, tool_choice=choice, max_output_tokens=100
    ) as stream:
        done = [e for e in stream if e.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    (call,) = _check_calls(final.output)
    assert call.name == "get_time" and [e.arguments for e in done] == [call.arguments]


def test_the_answer_to_a_call_goes_back_in(client) -> None:
    first = client.responses.create(
        model=MODEL, input=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_output_tokens=150
    )
    (call,) = _check_calls(first.output)
    answer = {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"}
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, input=[answer], tools=TOOLS, tool_choice="none",
        max_output_tokens=30,
    )  # fmt: skip
    assert second.output[0].type == "message" and second.output_text


def test_an_agent_runs_its_tool_to_completion(server) -> None:
    """The OpenAI Agents SDK over the Responses API: the tool runs, and its output ends the run."""
    import agents
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)
    ran: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"It is sunny in {city}."

    client = AsyncOpenAI(base_url=f"{server.url}/inference/v1", api_key="e2e", max_retries=0)
    agent = agents.Agent(
        name="weather",
        instructions="Answer questions about the weather with the get_weather tool.",
        model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
        # Greedy: sampled, the call once drew a city name longer than the token budget (CI, stop 10).
        model_settings=agents.ModelSettings(tool_choice="required", temperature=0.0, max_tokens=200),
        tools=[get_weather],
        tool_use_behavior="stop_on_first_tool",
    )

    async def run_both() -> tuple[Any, Any]:
        whole = await agents.Runner.run(agent, ASK)
        streamed = agents.Runner.run_streamed(agent, ASK)
        async for _ in streamed.stream_events():
            pass
        return whole, streamed

    whole, streamed = asyncio.run(run_both())
    assert len(ran) >= 2 and all(isinstance(city, str) and len(city) <= 100 for city in ran)
    assert whole.final_output == f"It is sunny in {ran[0]}." and streamed.final_output.startswith("It is sunny in ")
