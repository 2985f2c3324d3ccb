"""Responses API input: the request's `input` as stored message items, and items as chat messages.

Stored items have OpenAI's item shape (`{id, type: "message", role, status, content: [parts]}`),
what `GET /v1/responses/{id}/input_items` lists: user, system and developer text is `input_text`,
assistant text `output_text`. Only message items with text parts are supported; any other item
or part type is a 400 naming where it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from firebox.protocol.responses import InputContentPart, InputItem
from firebox.serving.errors import InvalidRequestError

ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")
_PART_FIELDS = {"annotations", "logprobs"}  # what an earlier output_text part carries besides its text


def new_item_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


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


def _item(i: int, item: InputItem) -> dict[str, Any]:
    where = f"input[{i}]"
    if item.type != "message":
        raise InvalidRequestError(
            f"input items of type {item.type!r} are not supported; only message items are", param=f"{where}.type"
        )
    if item.model_extra:
        name = next(iter(item.model_extra))
        raise InvalidRequestError(f"unknown field {name!r} in a message item", param=f"{where}.{name}")
    if item.role not in ROLES:
        raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}", param=f"{where}.role")
    if item.content is None:
        raise InvalidRequestError("a message item needs content", param=f"{where}.content")
    return message_item(item.role, _texts(item.content, where), item.id)


def _texts(content: str | list[InputContentPart], where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
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
    (a developer message is a system message; text parts are joined as chat joins them)."""
    messages = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        role = "system" if item["role"] == "developer" else item["role"]
        messages.append({"role": role, "content": "\n".join(part["text"] for part in item["content"])})
    return messages
