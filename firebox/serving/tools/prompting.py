"""Tools and past calls in the prompt.

A chat template that knows tools (the Hugging Face convention: a `tools` variable, and assistant
messages with `tool_calls` whose arguments are objects) gets them as it expects. One that does not
(the bundled SmolLM2's) gets firebox's default tool prompt: a system block listing the functions'
JSON schemas and saying how to call them in the model family's format, and past calls written into
the assistant messages as the model would have written them.
"""

from __future__ import annotations

import json
from typing import Any

from firebox.serving.tools.calling import ToolCalling
from firebox.serving.tools.formats import ToolFormat


def template_knows_tools(chat_template: str | None) -> bool:
    return chat_template is not None and "tools" in chat_template


def default_tool_prompt(calling: ToolCalling, fmt: ToolFormat) -> str:
    listed = "\n".join(json.dumps(tool.as_openai()["function"]) for tool in calling.tools)
    return f"You can call these functions, given as JSON schemas:\n<tools>\n{listed}\n</tools>\n\n{fmt.instructions()}"


def prompt_messages(
    messages: list[dict[str, Any]], calling: ToolCalling | None, fmt: ToolFormat, chat_template: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools) to render the chat template with."""
    if template_knows_tools(chat_template):
        tools = [tool.as_openai() for tool in calling.tools] if calling is not None else None
        return [_with_argument_objects(m) for m in messages], tools
    rendered = [_with_calls_in_content(m, fmt) for m in messages]
    if calling is None:
        return rendered, None
    return _with_system_block(rendered, default_tool_prompt(calling, fmt)), None


def _with_argument_objects(message: dict[str, Any]) -> dict[str, Any]:
    """HF templates write `tool_call.function.arguments | tojson`: they expect an object."""
    if not message.get("tool_calls"):
        return message
    calls = []
    for call in message["tool_calls"]:
        function = dict(call["function"])
        if isinstance(function.get("arguments"), str):
            function["arguments"] = json.loads(function["arguments"] or "{}")
        calls.append({**call, "function": function})
    return {**message, "tool_calls": calls}


def _with_calls_in_content(message: dict[str, Any], fmt: ToolFormat) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if not calls:
        return message
    as_json = [
        {"name": c["function"]["name"], "arguments": _arguments(c["function"].get("arguments", "{}"))} for c in calls
    ]
    rest = {key: value for key, value in message.items() if key != "tool_calls"}
    rest["content"] = (message.get("content") or "") + fmt.render_calls(as_json)
    return rest


def _arguments(arguments: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(arguments or "{}") if isinstance(arguments, str) else arguments


def _with_system_block(messages: list[dict[str, Any]], block: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{block}".lstrip()}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]
