"""Chat truncation by running sums: the same prompt as dropping one turn at a time, in a few renders."""

from __future__ import annotations

from typing import Any

import pytest

from firebox.serving import prompt as prompt_module
from firebox.serving.prompt import chat_prompt, render_chat
from tests.fakes import QWEN3_TEMPLATE, chatml_tokenizer, thinking_tokenizer


def _turn_by_turn_renders(tok: Any, messages: list[dict]) -> list[tuple[str, list[int]]]:
    """The reference: the whole conversation rendered and tokenized again after each dropped turn."""
    renders = []
    while True:
        text = render_chat(tok, messages)
        renders.append((text, tok.encode(text)))
        first = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
        if first >= len(messages) - 1:
            return renders
        rest = messages[first + 1 :]
        while len(rest) > 1 and rest[0]["role"] in ("assistant", "tool"):
            rest = rest[1:]
        messages = messages[:first] + rest


def _one_turn_at_a_time(renders: list[tuple[str, list[int]]], tok: Any, budget: int) -> tuple[str, list[int]]:
    """The first of the reference renders that fits, or the last one's most recent tokens."""
    fitting = next((r for r in renders if len(r[1]) <= budget), None)
    if fitting is not None:
        return fitting
    ids = renders[-1][1][-budget:]
    return tok.decode(ids, skip_special_tokens=False), ids


def _conversations() -> dict[str, list[dict]]:
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    turns = []
    for i in range(7):
        turns.append({"role": "user", "content": f"question {i} " + "about Paris " * (i % 3)})
        if i % 3 == 1:  # a call, its result, then the answer: the replies go with their turn
            turns.append({"role": "assistant", "content": "", "tool_calls": [call]})
            turns.append({"role": "tool", "content": f"sunny {i}", "tool_call_id": "c1"})
        turns.append({"role": "assistant", "content": f"answer {i} " * (1 + i % 3)})
    last = {"role": "user", "content": "last question"}
    return {
        "system first": [{"role": "system", "content": "Be brief."}, *turns, last],
        "no system": [*turns, last],
        "system in the middle": [*turns[:5], {"role": "system", "content": "Now be formal."}, *turns[5:], last],
        "opens with a reply": [{"role": "assistant", "content": "Hi!"}, *turns, last],
    }


@pytest.mark.parametrize("template", ["chatml", "qwen3"])
@pytest.mark.parametrize("name", list(_conversations()))
def test_every_budget_gives_the_prompt_of_dropping_one_turn_at_a_time(template: str, name: str) -> None:
    tok = chatml_tokenizer() if template == "chatml" else thinking_tokenizer(QWEN3_TEMPLATE)
    messages = _conversations()[name]
    renders = _turn_by_turn_renders(tok, messages)
    for budget in range(8, len(renders[0][1]) + 2):
        expected_text, expected_ids = _one_turn_at_a_time(renders, tok, budget)
        prompt = chat_prompt(tok, messages, budget)
        assert (prompt.text, prompt.token_ids) == (expected_text, expected_ids), budget
        if len(prompt.token_ids) < budget:  # whole turns were dropped: the render of the messages kept
            assert prompt.token_ids == tok.encode(prompt.text)


def test_a_long_conversation_is_cut_in_a_few_renders_each_message_tokenized_once(monkeypatch) -> None:
    tok = chatml_tokenizer()
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(2_000):
        messages += [{"role": "user", "content": f"question {i} about Paris"}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": "last question"})
    renders: list[int] = []
    real_render = prompt_module.render_chat

    def counting_render(tokenizer: Any, kept: list[dict], *args: Any) -> str:
        renders.append(len(kept))
        return real_render(tokenizer, kept, *args)

    monkeypatch.setattr(prompt_module, "render_chat", counting_render)
    prompt = chat_prompt(tok, messages, 200)
    assert len(prompt.token_ids) <= 200 and "question 1999 " in prompt.text and "Be brief." in prompt.text
    assert len(renders) <= 12, len(renders)  # one turn at a time: some 2,000 renders
    monkeypatch.setattr(prompt_module, "render_chat", real_render)
    reference = _turn_by_turn_renders(tok, messages[:1] + messages[-60:])
    assert (prompt.text, prompt.token_ids) == _one_turn_at_a_time(reference, tok, 200)
