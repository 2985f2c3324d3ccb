"""A Responses request as the chat request of the same meaning, so that ChatService's own
preparation serves it (chat template, tools and their grammar, output parsers) and planning,
sampling defaults, perf metrics and records are chat's: the items become chat messages (calls
the assistant's `tool_calls`, their outputs `tool` messages), function tools chat's tools,
`max_output_tokens` max_tokens, `text.format` response_format, `truncation: "auto"` chat's
"truncate" (the oldest items go first).

`max_tool_calls` is honoured as OpenAI documents it for its own tools: calls past the limit are
ignored (left out of the output); a limit of 1 is a single call, enforced by the grammar.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from firebox.protocol.chat import ChatCompletionRequest
from firebox.protocol.responses import CHAT_FIELDS, ResponseCreateRequest
from firebox.serving.errors import InvalidRequestError
from firebox.serving.responses.items import chat_messages

_RESPONSES_PARAM = {
    "messages": "input", "max_tokens": "max_output_tokens", "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
}  # fmt: skip


def chat_request(req: ResponseCreateRequest, items: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat request for `items` (the whole conversation), validated as chat validates."""
    fields: dict[str, Any] = {name: getattr(req, name) for name in ("model", "stream", *CHAT_FIELDS)}
    fields.update(max_tokens=req.max_output_tokens, messages=chat_messages(req.instructions, items), **_tools(req))
    if req.truncation == "auto":
        fields["context_length_exceeded_behavior"] = "truncate"
    if req.reasoning is not None and req.reasoning.effort is not None:
        fields["reasoning_effort"] = req.reasoning.effort  # chat's check: only thinking models take "on"
    if req.text is not None and req.text.format is not None:
        fields["response_format"] = req.text.format.as_response_format()
    if req.wants_logprobs:
        fields.update(logprobs=True, top_logprobs=req.top_logprobs)
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        param = ".".join([_RESPONSES_PARAM.get(loc[0], loc[0]), *loc[1:]]) if loc else None
        raise InvalidRequestError(str(first["msg"]).removeprefix("Value error, "), param=param) from exc


def _tools(req: ResponseCreateRequest) -> dict[str, Any]:
    """tools, tool_choice and parallel_tool_calls in chat's form (chat takes the named choice as is)."""
    if not req.tools:
        return {"tool_choice": req.tool_choice}  # chat refuses a choice that needs tools, as OpenAI does
    if req.tool_choice != "none":
        _check_combinations(req)
    return {
        "tools": [{"type": "function", "function": tool.model_dump(exclude={"type"})} for tool in req.tools],
        "tool_choice": req.tool_choice,
        "parallel_tool_calls": req.parallel_tool_calls is not False and req.max_tool_calls != 1,
    }


def _check_combinations(req: ResponseCreateRequest) -> None:
    """What cannot go with calls: they are constrained output, and their markup is not text."""
    if req.wants_logprobs:
        raise InvalidRequestError(
            'include "message.output_text.logprobs" cannot be combined with tools that may be called; '
            'pass tool_choice "none" or leave the logprobs out',
            param="include",
        )
    if req.text is not None and req.text.format is not None and req.text.format.type != "text":
        raise InvalidRequestError(
            'text.format cannot be combined with tools that may be called; pass tool_choice "none" or leave it out',
            param="text.format",
        )


def echoed_tools(req: ResponseCreateRequest) -> list[dict[str, Any]]:
    """The tools as OpenAI echoes them; `strict` is true unless turned off (the schema is always enforced)."""
    return [
        {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
            "strict": tool.strict is not False,
        }
        for tool in req.tools or ()
    ]


def echoed_tool_choice(req: ResponseCreateRequest) -> str | dict[str, Any]:
    choice = req.tool_choice
    if choice is None or isinstance(choice, str):
        return choice or "auto"
    name = choice.function.name if choice.function is not None else choice.name
    return {"type": "function", "name": name}
