"""Thinking models on Chat Completions through the real server and the `openai` SDK, over a fake
engine with Qwen3's chat template and a scripted reply: the thinking in `reasoning_content`, never
in `content`; its tokens counted; `reasoning_effort` / `thinking` turning it on and off; a
response_format or the tools' calls constraining only the answer after it."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.fakes import OPENS_THINKING_TEMPLATE, thinking_tokenizer

MODEL = "accounts/fireworks/models/fake-chatml"
ASK = [{"role": "user", "content": "What is 2 + 2?"}]
THINKING = "The user asks 2 + 2. That is 4."
REPLY = f"<think>\n{THINKING}\n</think>\n\nThe answer is 4."
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
CLOSED_THINKING = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.fixture
def qwen3(server, monkeypatch):
    """The shared fake engine, speaking through Qwen3's chat template."""
    monkeypatch.setattr(server.engine, "tokenizer", thinking_tokenizer())
    monkeypatch.setattr(server.engine, "max_model_len", 4096)
    server.engine.reply = REPLY
    return server


def _reasoning_tokens(server) -> int:
    """The reply's tokens through `</think>` (the fake engine joins the reply's words with spaces)."""
    thinking = " ".join(REPLY.split()).split("</think>")[0] + "</think>"
    return len(server.engine.tokenizer.encode(thinking))


def _prompt(response) -> str:
    return response.choices[0].model_extra["raw_output"]["prompt_fragments"][0]


def test_the_thinking_is_reasoning_content_and_counted(client, qwen3) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK)
    message = response.choices[0].message
    assert message.content == "The answer is 4."
    assert message.model_extra["reasoning_content"] == THINKING
    usage = response.usage
    assert usage.completion_tokens_details.reasoning_tokens == _reasoning_tokens(qwen3)
    assert 0 < usage.completion_tokens_details.reasoning_tokens < usage.completion_tokens


def test_streamed_thinking_arrives_as_reasoning_deltas(client, qwen3) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    content = reasoning = ""
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            assert "<" not in (choice.delta.content or "")  # no fragment of a tag, ever
    assert (reasoning, content) == (THINKING, "The answer is 4.")
    assert usage.completion_tokens_details.reasoning_tokens == _reasoning_tokens(qwen3)


@pytest.mark.parametrize("off", [{"reasoning_effort": "none"}, {"reasoning_effort": False}, {"thinking": {"type": "disabled"}}])
def test_thinking_off_closes_the_thinking_in_the_prompt(client, qwen3, off) -> None:
    qwen3.engine.reply = "The answer is 4."
    response = client.chat.completions.create(model=MODEL, messages=ASK, extra_body={**off, "raw_output": True})
    assert _prompt(response).endswith(CLOSED_THINKING)
    assert response.choices[0].message.content == "The answer is 4."
    assert response.usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(
    "on", [{"reasoning_effort": "high"}, {"reasoning_effort": "low"}, {"reasoning_effort": True}, {"thinking": {"type": "enabled"}}]
)
def test_any_effort_thinks_as_the_template_does(client, qwen3, on) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, extra_body={**on, "raw_output": True})
    assert _prompt(response).endswith("<|im_start|>assistant\n")
    assert response.choices[0].message.model_extra["reasoning_content"] == THINKING


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"reasoning_effort": 1024}, "reasoning_effort"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"thinking": {"type": "enabled"}, "reasoning_effort": "high"}, "thinking"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
    ],
)
def test_budgets_and_bad_reasoning_fields_are_a_400(client, qwen3, extra, param) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, extra_body=extra)
    assert caught.value.body["param"] == param
    assert not qwen3.engine.submitted


def test_a_template_that_always_thinks_cannot_turn_it_off(client, server, monkeypatch) -> None:
    monkeypatch.setattr(server.engine, "tokenizer", thinking_tokenizer(OPENS_THINKING_TEMPLATE))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, extra_body={"reasoning_effort": "none"})
    assert caught.value.body["param"] == "reasoning_effort" and "cannot turn thinking off" in caught.value.body["message"]


def test_a_prompt_that_opens_the_thinking_starts_the_output_in_it(client, server, monkeypatch) -> None:
    monkeypatch.setattr(server.engine, "tokenizer", thinking_tokenizer(OPENS_THINKING_TEMPLATE))
    server.engine.reply = f"{THINKING}\n</think>\n\nThe answer is 4."
    message = client.chat.completions.create(model=MODEL, messages=ASK).choices[0].message
    assert (message.model_extra["reasoning_content"], message.content) == (THINKING, "The answer is 4.")


def test_reasoning_fields_stay_a_400_where_nothing_thinks(server) -> None:
    completions = httpx.post(
        f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "Hi", "reasoning_effort": "high"}
    )
    assert completions.status_code == 400 and completions.json()["error"]["param"] == "reasoning_effort"
    chat = httpx.post(
        f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": ASK, "thinking": {"type": "enabled"}}
    )
    assert chat.status_code == 400 and "'thinking' is not supported" in chat.json()["error"]["message"]
    assert not server.engine.submitted


def test_a_response_format_constrains_the_answer_after_the_thinking(client, qwen3) -> None:
    fmt = {"type": "json_object", "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}}}
    client.chat.completions.create(model=MODEL, messages=ASK, extra_body={"response_format": fmt})
    spec = qwen3.engine.submitted[0].structured_output
    assert spec.syntax == "lark" and "fb_thinking[lazy]" in spec.source and '"answer"' in spec.source
    client.chat.completions.create(
        model=MODEL, messages=ASK, extra_body={"response_format": fmt, "reasoning_effort": "none"}
    )
    assert qwen3.engine.submitted[1].structured_output.syntax == "json_schema"  # no thinking: the answer only


def test_calls_follow_the_thinking(client, qwen3) -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    qwen3.engine.reply = f"<think>\nI should call get_weather.\n</think>\n\n{call}"
    choice = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER]).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.model_extra["reasoning_content"] == "I should call get_weather."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    spec = qwen3.engine.submitted[0].structured_output
    assert "fb_thinking[lazy]" in spec.source and "<tool_call>" in spec.source
