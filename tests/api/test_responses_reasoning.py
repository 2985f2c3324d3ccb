"""A thinking model on the Responses API: its thoughts come back as a `reasoning` item before the
answer (streamed as reasoning_text events), counted in reasoning_tokens; `reasoning.effort`
turns thinking on or off; earlier reasoning items passed back in `input` are accepted."""

from __future__ import annotations

import openai
import pytest

from tests.api.test_chat_reasoning import MODEL, THINKING, qwen3  # noqa: F401 (qwen3: the fake Qwen3 fixture)


def test_the_thinking_is_a_reasoning_item_before_the_answer(client, qwen3) -> None:
    response = client.responses.create(model=MODEL, input="What is 2 + 2?")
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.content[0].text == THINKING and reasoning.status == "completed"
    assert message.type == "message" and response.output_text == "The answer is 4."
    assert response.usage.output_tokens_details.reasoning_tokens > 0


def test_streamed_thinking_arrives_as_reasoning_text_events(client, qwen3) -> None:
    with client.responses.stream(model=MODEL, input="What is 2 + 2?") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thought.strip() == THINKING
    assert final.output[0].type == "reasoning" and final.output_text == "The answer is 4."


def test_reasoning_effort_none_turns_thinking_off(client, qwen3) -> None:
    response = client.responses.create(model=MODEL, input="What is 2 + 2?", reasoning={"effort": "none"})
    assert response.reasoning.effort == "none"
    submitted = qwen3.engine.submitted[-1]
    prompt = qwen3.engine.tokenizer.decode(list(submitted.prompt_token_ids), skip_special_tokens=False)
    assert prompt.endswith("<think>\n\n</think>\n\n")  # the template's "thinking off" opening


def test_earlier_output_with_reasoning_goes_back_as_input(client, qwen3) -> None:
    first = client.responses.create(model=MODEL, input="What is 2 + 2?", store=False)
    items = [item.model_dump(exclude_none=True) for item in first.output]
    conversation = [{"role": "user", "content": "What is 2 + 2?"}, *items, {"role": "user", "content": "And 3 + 3?"}]
    second = client.responses.create(model=MODEL, input=conversation)
    assert second.output_text == "The answer is 4."
    prompt = qwen3.engine.tokenizer.decode(list(qwen3.engine.submitted[-1].prompt_token_ids), skip_special_tokens=False)
    assert THINKING not in prompt  # past thinking is not fed back


def test_reasoning_on_a_model_that_does_not_think_is_a_400(client, server) -> None:
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="Hi", reasoning={"effort": "high"})
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="Hi", reasoning={"effort": "low", "summary": "auto"})
    assert "reasoning" in caught.value.body["param"]
