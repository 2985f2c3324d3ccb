"""Prompt building and the context policy."""

from __future__ import annotations

import pytest

from firebox.protocol.chat import ChatMessage
from firebox.serving.errors import ContextLengthError, InvalidRequestError
from firebox.serving.prompt import (
    chat_prompt,
    check_prompt_fits,
    fit_max_tokens,
    message_dicts,
    render_chat,
    text_prompt,
    token_prompt,
    truncation_budget,
)
from firebox.serving.generation.sampling import DEFAULT_MAX_TOKENS
from tests.fakes import chatml_tokenizer


def _turns(n: int) -> list[dict]:
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(n):
        messages.append({"role": "user", "content": f"question number {i} about Paris"})
        messages.append({"role": "assistant", "content": f"answer number {i}"})
    messages.append({"role": "user", "content": "last question"})
    return messages


def test_max_tokens_defaults_to_2048_capped_by_the_context() -> None:
    assert fit_max_tokens(10, 100_000, None, None) == DEFAULT_MAX_TOKENS
    assert fit_max_tokens(90, 100, None, None) == 10
    assert fit_max_tokens(90, 100, None, "error") == 10  # no explicit max_tokens: nothing to refuse


def test_max_tokens_over_the_context_is_lowered_unless_error_was_asked() -> None:
    assert fit_max_tokens(90, 100, 50, None) == 10
    assert fit_max_tokens(90, 100, 50, "truncate") == 10
    with pytest.raises(ContextLengthError) as info:
        fit_max_tokens(90, 100, 50, "error")
    assert "100" in info.value.message and "140" in info.value.message and info.value.param == "max_tokens"


def test_prompt_filling_the_context_is_refused_with_both_numbers() -> None:
    check_prompt_fits(99, 100, "prompt")
    with pytest.raises(InvalidRequestError, match="empty"):
        check_prompt_fits(0, 100, "prompt")
    with pytest.raises(ContextLengthError) as info:
        check_prompt_fits(100, 100, "messages")
    assert "100 tokens" in info.value.message and info.value.param == "messages"


def test_truncation_budget() -> None:
    assert truncation_budget(None, 100) is None
    assert truncation_budget("error", 100) is None
    assert truncation_budget("truncate", 100) == 99
    assert truncation_budget(None, 100, prompt_truncate_len=30) == 30
    assert truncation_budget("truncate", 100, prompt_truncate_len=300) == 99


def test_chat_truncation_drops_oldest_turns_and_keeps_the_system_prompt() -> None:
    tok = chatml_tokenizer()
    messages = _turns(6)
    full = chat_prompt(tok, messages, None)
    budget = len(full.token_ids) // 2
    cut = chat_prompt(tok, messages, budget)
    assert len(cut.token_ids) <= budget
    assert "Be brief." in cut.text and "last question" in cut.text
    assert "question number 0" not in cut.text and "question number 5" in cut.text
    assert cut.text.count("<|im_start|>user") >= 2  # whole turns went, not characters
    assert cut.token_ids == tok.encode(cut.text)


def test_chat_truncation_never_starts_on_an_assistant_reply() -> None:
    tok = chatml_tokenizer()
    messages = _turns(4)
    smallest = len(chat_prompt(tok, [messages[0], messages[-1]], None).token_ids)  # below it tokens are cut
    for budget in range(smallest, len(chat_prompt(tok, messages, None).token_ids)):
        text = chat_prompt(tok, messages, budget).text
        after_system = text.split("<|im_end|>\n", 1)[1]
        assert after_system.startswith("<|im_start|>user"), budget


def test_chat_truncation_cuts_tokens_when_the_last_turn_alone_is_too_long() -> None:
    tok = chatml_tokenizer()
    messages = [{"role": "user", "content": "Tell me a story " * 40}]
    cut = chat_prompt(tok, messages, 25)
    full = chat_prompt(tok, messages, None)
    assert cut.token_ids == full.token_ids[-25:]  # the most recent tokens are kept


def test_text_and_token_prompts() -> None:
    tok = chatml_tokenizer()
    prompt = text_prompt(tok, "Hello, world!", None)
    assert prompt.token_ids == tok.encode("Hello, world!") and prompt.text == "Hello, world!"
    assert text_prompt(tok, "Hello, world!", 3).token_ids == prompt.token_ids[-3:]
    ids = token_prompt(tok, [5, 6, 7, 8], 2)
    assert ids.token_ids == [7, 8] and ids.fragments == [5, 6, 7, 8]
    with pytest.raises(InvalidRequestError, match="vocabulary"):
        token_prompt(tok, [tok.vocab_size], None)


def test_content_parts_are_joined_and_other_parts_refused() -> None:
    parts = ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    )
    assert message_dicts([parts])[0]["content"] == "a\nb"
    image = ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}
    )
    with pytest.raises(InvalidRequestError) as info:
        message_dicts([parts, image])
    assert info.value.param == "messages[1].content[0]"


def test_render_chat_without_template_is_a_400() -> None:
    from firebox.loader.tokenizer import Tokenizer

    tok = chatml_tokenizer()
    bare = Tokenizer(tok._backend, tok.special, chat_template=None)
    with pytest.raises(InvalidRequestError, match="no chat template"):
        render_chat(bare, [{"role": "user", "content": "hi"}])
