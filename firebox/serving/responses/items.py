"""Responses API input: the request's `input` as stored items, and items as chat messages.

Stored items have OpenAI's item shapes, what `GET /v1/responses/{id}/input_items` lists:
- a message `{id, type: "message", role, status, content: [parts]}`: user, system and developer
  text is `input_text`, assistant text `output_text`;
- an earlier call `{id, type: "function_call", call_id, name, arguments, status}`;
- its answer `{id, type: "function_call_output", call_id, output, status}`.
Any other item or part type, or a field that belongs to another type of item, is a 400 naming
where it is. As chat messages, calls are the assistant's `tool_calls` and answers are `tool`
messages, so that the chat machinery writes them into the prompt as the model family does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from firebox.protocol.responses import InputContentPart, InputItem
from firebox.serving.errors import InvalidRequestError

ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")
_PART_FIELDS = {"annotations", "logprobs"}  # what an earlier output_text part carries besides its text
_ITEM_FIELDS = {
    "message": {"type", "id", "role", "content", "status", "phase"},
    "function_call": {"type", "id", "call_id", "name", "arguments", "status"},
    "function_call_output": {"type", "id", "call_id", "output", "status"},
    "reasoning": {"type", "id", "summary", "content", "encrypted_content", "status"},
}


def new_item_id(prefix: str = "msg") -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def text_part(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def message_item(role: str, texts: Sequence[str], item_id: str | None = None) -> dict[str, Any]:
    content = [text_part(role, text) for text in texts]
    return {"id": item_id or new_item_id(), "type": "message", "role": role, "status": "completed", "content": content}


def input_items(value: str | list[InputItem]) -> list[dict[str, Any]]:
    """The request's input as stored items: a string is one user message."""
    if isinstance(value, str):
        return [message_item("user", [value])]
    if not value:  # as chat refuses an empty `messages`
        raise InvalidRequestError("input must hold at least one item", param="input")
    return [_item(i, item) for i, item in enumerate(value)]


def check_call_outputs(earlier: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]]) -> None:
    """Every function_call_output of `items` (the request's input) answers a call made before it."""
    call_ids = {item["call_id"] for item in earlier if item.get("type") == "function_call"}
    for i, item in enumerate(items):
        if item["type"] == "function_call":
            call_ids.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in call_ids:
            raise InvalidRequestError(
                f"call_id {item['call_id']!r} matches no earlier function_call", param=f"input[{i}].call_id"
            )


def _item(i: int, item: InputItem) -> dict[str, Any]:
    where = f"input[{i}]"
    allowed = _ITEM_FIELDS.get(item.type)
    if allowed is None:
        raise InvalidRequestError(
            f"input items of type {item.type!r} are not supported; "
            "only message, reasoning, function_call and function_call_output items are",
            param=f"{where}.type",
        )
    given = {name for name in item.model_fields_set if getattr(item, name) is not None} | set(item.model_extra or {})
    unknown = sorted(given - allowed)
    if unknown:
        raise InvalidRequestError(f"unknown field {unknown[0]!r} in a {item.type} item", param=f"{where}.{unknown[0]}")
    return _BUILDERS[item.type](item, where)


def _message(item: InputItem, where: str) -> dict[str, Any]:
    if item.role not in ROLES:
        raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}", param=f"{where}.role")
    if item.content is None:
        raise InvalidRequestError("a message item needs content", param=f"{where}.content")
    return message_item(item.role, _texts(item.content, f"{where}.content"), item.id)


def _function_call(item: InputItem, where: str) -> dict[str, Any]:
    _require(item, where, "call_id", "name", "arguments")
    try:
        arguments = json.loads(item.arguments or "")
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"the arguments are not valid JSON: {exc}", param=f"{where}.arguments") from exc
    if not isinstance(arguments, dict):
        raise InvalidRequestError("the arguments must be a JSON object", param=f"{where}.arguments")
    return {
        "id": item.id or new_item_id("fc"),
        "type": "function_call",
        "call_id": item.call_id,
        "name": item.name,
        "arguments": item.arguments,
        "status": "completed",
    }


def _function_call_output(item: InputItem, where: str) -> dict[str, Any]:
    _require(item, where, "call_id", "output")
    output = item.output if isinstance(item.output, str) else "\n".join(_texts(item.output or [], f"{where}.output"))
    return {
        "id": item.id or new_item_id("fco"),
        "type": "function_call_output",
        "call_id": item.call_id,
        "output": output,
        "status": "completed",
    }


_BUILDERS: dict[str, Callable[[InputItem, str], dict[str, Any]]] = {
    "message": _message,
    "function_call": _function_call,
    "function_call_output": _function_call_output,
    "reasoning": lambda item, where: _reasoning(item),
}


def _reasoning(item: InputItem) -> dict[str, Any]:
    """An earlier reasoning item, as clients pass the whole output back: kept with the
    conversation, never put into the prompt (chat templates drop past thinking too)."""
    texts = [part.text or "" for part in item.content] if isinstance(item.content, list) else []
    content = [{"type": "reasoning_text", "text": text} for text in texts]
    return {"id": item.id or new_item_id("rs"), "type": "reasoning", "summary": [], "content": content}


def _require(item: InputItem, where: str, *names: str) -> None:
    for name in names:
        if getattr(item, name) is None:
            raise InvalidRequestError(f"a {item.type} item needs {name}", param=f"{where}.{name}")


def _texts(content: str | list[InputContentPart], where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if part.type not in TEXT_PARTS or part.text is None:
            raise InvalidRequestError(
                f"content parts of type {part.type!r} are not supported; only input_text and output_text are",
                param=at,
            )
        unknown = sorted(set(part.model_extra or {}) - _PART_FIELDS)
        if unknown:
            message = f"field {unknown[0]!r} of a content part is not supported"
            raise InvalidRequestError(message, param=f"{at}.{unknown[0]}")
        texts.append(part.text)
    return texts


def chat_messages(instructions: str | None, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for the chat template: the instructions as the system message, then the items
    (a developer message is a system message; text parts are joined as chat joins them; calls
    join the assistant message just before them, as chat's `tool_calls`)."""
    messages = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item["type"] == "function_call":
            _add_call(messages, item)
        elif item["type"] == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        elif item["type"] == "reasoning":
            continue
        else:
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": "\n".join(part["text"] for part in item["content"])})
    return messages


def _add_call(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    function = {"name": item["name"], "arguments": item["arguments"]}
    call = {"id": item["call_id"], "type": "function", "function": function}
    if messages and messages[-1]["role"] == "assistant":
        messages[-1].setdefault("tool_calls", []).append(call)
    else:  # no content key: as chat passes an assistant message that only calls
        messages.append({"role": "assistant", "tool_calls": [call]})
