"""Prompts: chat messages -> template -> token ids, raw prompts -> token ids, and the context policy.

Context policy (Fireworks' `context_length_exceeded_behavior`):
- a prompt that fills the context is a 400 with both numbers, unless "truncate" was asked for
  explicitly: then the most recent tokens are kept (for chat, the oldest turns go first);
- prompt + max_tokens over the context lowers max_tokens, unless "error" was asked for
  explicitly together with a max_tokens: then it is a 400 with the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from firebox.loader.tokenizer import Tokenizer
from firebox.protocol.chat import ChatMessage
from firebox.serving.chat_template import ChatTemplateError, render_chat_template
from firebox.serving.errors import ContextLengthError, InvalidRequestError
from firebox.serving.generation.sampling import DEFAULT_MAX_TOKENS
from firebox.serving.turn_truncation import fewest_turns_dropped


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    token_ids: list[int]
    text: str  # what echo returns for the whole prompt
    fragments: list[str | int]  # raw_output.prompt_fragments: the pieces before tokenization


def message_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as the template sees them; text parts joined, any other part refused."""
    return [_message_dict(i, m) for i, m in enumerate(messages)]


def _message_dict(i: int, message: ChatMessage) -> dict[str, Any]:
    data = message.model_dump(exclude_none=True)
    if isinstance(message.content, list):
        texts = []
        for j, part in enumerate(message.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"content part of type {part.type!r} is not supported; only text parts are",
                    param=f"messages[{i}].content[{j}]",
                )
            texts.append(part.text)
        data["content"] = "\n".join(texts)
    return data


def special_tokens_of(tokenizer: Tokenizer) -> dict[str, str]:
    names = ("bos_token", "eos_token", "pad_token", "unk_token")
    return {name: value for name in names if (value := getattr(tokenizer.special, name)) is not None}


def render_chat(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    variables: dict[str, Any] | None = None,
) -> str:
    if tokenizer.chat_template is None:
        raise InvalidRequestError("this model has no chat template; use the completions API", param="messages")
    try:
        return render_chat_template(
            tokenizer.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=special_tokens_of(tokenizer),
            tools=tools,
            variables=variables,
        )
    except ChatTemplateError as exc:
        raise InvalidRequestError(str(exc), param="messages") from exc


def chat_prompt(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    budget: int | None,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    variables: dict[str, Any] | None = None,
) -> PreparedPrompt:
    """The rendered prompt; over `budget` tokens, oldest turns go first, then the oldest tokens.
    Blocking (a long conversation costs milliseconds): call it off the event loop."""

    def render(kept: list[dict[str, Any]]) -> tuple[str, list[int]]:
        text = render_chat(tokenizer, kept, add_generation_prompt, tools, variables)
        return text, tokenizer.encode(text)

    text, ids = render(messages)
    if budget is not None and len(ids) > budget:
        text, ids = fewest_turns_dropped(messages, budget, (text, ids), render, _token_counts(tokenizer))
        if len(ids) > budget:  # the last turn alone is too long: keep its most recent tokens
            ids = ids[len(ids) - budget :]
            text = tokenizer.decode(ids, skip_special_tokens=False)
    return PreparedPrompt(ids, text, [text])


def _token_counts(tokenizer: Tokenizer) -> Callable[[list[str]], list[int]]:
    return lambda texts: [len(ids) for ids in tokenizer.encode_batch(texts)]


def text_prompt(tokenizer: Tokenizer, text: str, budget: int | None) -> PreparedPrompt:
    ids = tokenizer.encode(text, add_special_tokens=True)
    if budget is not None and len(ids) > budget:
        ids = ids[len(ids) - budget :]
        return PreparedPrompt(ids, tokenizer.decode(ids, skip_special_tokens=False), [text])
    return PreparedPrompt(ids, text, [text])


def token_prompt(tokenizer: Tokenizer, ids: list[int], budget: int | None) -> PreparedPrompt:
    vocab_size = tokenizer.vocab_size
    if any(i >= vocab_size for i in ids):
        raise InvalidRequestError(f"prompt token ids must be below the vocabulary size {vocab_size}", param="prompt")
    fragments: list[str | int] = list(ids)
    if budget is not None and len(ids) > budget:
        ids = ids[len(ids) - budget :]
    return PreparedPrompt(list(ids), tokenizer.decode(ids, skip_special_tokens=False), fragments)


def truncation_budget(behavior: str | None, max_model_len: int, prompt_truncate_len: int | None = None) -> int | None:
    """Most prompt tokens to keep, or None to keep all (and refuse an over-long prompt)."""
    budgets = [prompt_truncate_len] if prompt_truncate_len is not None else []
    if behavior == "truncate":
        budgets.append(max_model_len - 1)  # room for one generated token
    return min(budgets) if budgets else None


def check_prompt_fits(num_prompt_tokens: int, max_model_len: int, param: str) -> None:
    if num_prompt_tokens == 0:
        raise InvalidRequestError("the prompt is empty (no tokens)", param=param)
    if num_prompt_tokens >= max_model_len:
        raise ContextLengthError(
            f"The prompt is too long: {num_prompt_tokens} tokens, while this model's maximum context "
            f"length is {max_model_len} tokens (prompt plus at least one generated token must fit). "
            'Shorten the prompt or pass context_length_exceeded_behavior="truncate".',
            param=param,
        )


def fit_max_tokens(num_prompt_tokens: int, max_model_len: int, requested: int | None, behavior: str | None) -> int:
    """max_tokens for one prompt under the context policy."""
    room = max_model_len - num_prompt_tokens
    if requested is None:
        return min(DEFAULT_MAX_TOKENS, room)
    if requested > room and behavior == "error":
        raise ContextLengthError(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{num_prompt_tokens + requested} tokens ({num_prompt_tokens} in the prompt, {requested} in the "
            "completion). Lower max_tokens or shorten the prompt.",
            param="max_tokens",
        )
    return min(requested, room)
