"""An Anthropic Messages request as the chat request it means, so that the chat machinery (template,
tools and their grammar, sampling, context policy, records) serves it unchanged.

Turns map onto chat messages: `system` becomes a system message; a user turn's `tool_result`
blocks become `tool` messages (in order, around its text); an assistant turn's `tool_use` blocks
become its `tool_calls` and its `thinking` blocks its `reasoning_content`. `tool_choice` any / tool /
none are chat's required / named / none; `disable_parallel_tool_use` is
`parallel_tool_calls: false`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from firebox.protocol.chat import ChatCompletionRequest
from firebox.protocol.messages import (
    InputMessage,
    MessagesPrompt,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ThinkingConfig,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    UnsupportedBlock,
)
from firebox.serving.errors import InvalidRequestError

# Anthropic field -> chat field, for those that mean the same
_FIELDS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "stop_sequences": "stop", "stream": "stream",
}  # fmt: skip


def chat_request(req: MessagesPrompt) -> ChatCompletionRequest:
    """The chat request of a messages request (or of a count_tokens one: no sampling fields)."""
    fields: dict[str, Any] = {"model": req.model, "messages": chat_messages(req)}
    if req.tools:
        fields["tools"] = [_function(tool.name, tool.description, tool.input_schema) for tool in req.tools]
    if req.tool_choice is not None:
        fields.update(_tool_choice(req.tool_choice))
    if req.thinking is not None:  # chat's reasoning controls refuse thinking on a model without it
        fields["thinking"] = _thinking(req.thinking)
    if isinstance(req, MessagesRequest):
        fields.update(_sampling_fields(req))
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:  # a bound of chat's own that the Anthropic fields did not state
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequestError(str(first["msg"]).removeprefix("Value error, "), param=param) from exc


def _thinking(config: ThinkingConfig) -> dict[str, Any]:
    """Chat's `thinking`; "adaptive" (no budget: as long as the model wants) is chat's "enabled"."""
    return {"type": "enabled"} if config.type == "adaptive" else config.model_dump(exclude_none=True)


def _sampling_fields(req: MessagesRequest) -> dict[str, Any]:
    fields = {chat: value for ours, chat in _FIELDS.items() if (value := getattr(req, ours)) is not None}
    fields["max_tokens"] = req.max_tokens
    if req.metadata is not None and req.metadata.user_id is not None:
        fields["user"] = req.metadata.user_id
    if req.service_tier is not None:
        fields["service_tier"] = "default"
    return fields


def chat_messages(req: MessagesPrompt) -> list[dict[str, Any]]:
    if req.messages[-1].role == "assistant":
        raise InvalidRequestError(
            "the last message must be the user's: continuing a prefilled assistant turn is not supported",
            param=f"messages[{len(req.messages) - 1}].role",
        )
    messages = [] if req.system is None else [{"role": "system", "content": _text(req.system, "system")}]
    known_calls: set[str] = set()
    for i, message in enumerate(req.messages):
        if message.role == "assistant":
            messages.append(_assistant(message, i, known_calls))
        else:
            messages.extend(_user_turn(message, i, known_calls))
    return messages


def _assistant(message: InputMessage, i: int, known_calls: set[str]) -> dict[str, Any]:
    blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
    texts, calls, thoughts = [], [], []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            known_calls.add(block.id)
            function = {"name": block.name, "arguments": json.dumps(block.input)}
            calls.append({"id": block.id, "type": "function", "function": function})
        elif isinstance(block, ThinkingBlock):
            thoughts.append(block.thinking)
        else:
            raise _unsupported(block, f"messages[{i}].content[{j}]", "an assistant turn")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        out["tool_calls"] = calls
    if thoughts:
        out["reasoning_content"] = "\n".join(thoughts)
    return out


def _user_turn(message: InputMessage, i: int, known_calls: set[str]) -> list[dict[str, Any]]:
    """Text runs become user messages; each tool_result a `tool` message, in order."""
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    for j, block in enumerate(message.content):
        param = f"messages[{i}].content[{j}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
            continue
        if not isinstance(block, ToolResultBlock):
            raise _unsupported(block, param, "a user turn")
        if texts:
            out.append({"role": "user", "content": "\n".join(texts)})
            texts = []
        out.append(_tool_message(block, param, known_calls))
    if texts or not out:
        out.append({"role": "user", "content": "\n".join(texts)})
    return out


def _tool_message(block: ToolResultBlock, param: str, known_calls: set[str]) -> dict[str, Any]:
    if block.tool_use_id not in known_calls:
        raise InvalidRequestError(
            f"tool_result's tool_use_id {block.tool_use_id!r} matches no tool_use block of an earlier assistant turn",
            param=f"{param}.tool_use_id",
        )
    content = _text(block.content or "", f"{param}.content")
    if block.is_error:  # chat has no error flag: the model reads it in the text
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def _text(content: str | list[Any], param: str) -> str:
    if isinstance(content, str):
        return content
    for j, block in enumerate(content):
        if not isinstance(block, TextBlock):
            raise _unsupported(block, f"{param}[{j}]", "text content")
    return "\n".join(block.text for block in content)


def _unsupported(block: Any, param: str, where: str) -> InvalidRequestError:
    if isinstance(block, UnsupportedBlock):
        return InvalidRequestError(f"content blocks of type {block.type!r} are not supported by firebox", param=param)
    return InvalidRequestError(f"a {block.type} block cannot appear in {where}", param=param)


def _function(name: str, description: str | None, schema: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "parameters": schema} | ({"description": description} if description else {})
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone) -> dict[str, Any]:
    if isinstance(choice, ToolChoiceNone):
        return {"tool_choice": "none"}
    fields: dict[str, Any] = {"parallel_tool_calls": False} if choice.disable_parallel_tool_use else {}
    if isinstance(choice, ToolChoiceAny):
        return {**fields, "tool_choice": "required"}
    if isinstance(choice, ToolChoiceTool):
        return {**fields, "tool_choice": {"type": "function", "function": {"name": choice.name}}}
    return {**fields, "tool_choice": "auto"}
