"""`tools`, `tool_choice`, `parallel_tool_calls` (and the deprecated `functions` / `function_call`)
resolved once into a `ToolCalling` record, with every inconsistency a 400 that names the field."""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from firebox.protocol.chat import ChatCompletionRequest, ChatMessage, FunctionDefinition, FunctionName, NamedToolChoice
from firebox.serving.errors import InvalidRequestError

ANY_OBJECT: dict[str, Any] = {"type": "object"}
ToolChoice = str | NamedToolChoice | FunctionName | None  # a mode, a named function, or the deprecated function_call


class ChoiceMode(enum.StrEnum):
    NONE = "none"  # no call; the tools are still shown to the model, as OpenAI does
    AUTO = "auto"  # the model decides; a call it starts is constrained to the end
    REQUIRED = "required"  # at least one call, forced by grammar
    NAMED = "named"  # exactly the named function, forced by grammar


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: dict[str, Any]  # a JSON schema for the arguments object

    def as_openai(self) -> dict[str, Any]:
        """`{"type": "function", "function": {...}}`: what chat templates that know tools expect."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolCalling:
    tools: tuple[FunctionTool, ...]
    mode: ChoiceMode
    forced_name: str | None  # with NAMED
    parallel: bool  # several calls in one turn

    @property
    def may_call(self) -> bool:
        return self.mode is not ChoiceMode.NONE

    @property
    def callable_tools(self) -> tuple[FunctionTool, ...]:
        """The tools a call may name: the forced one, or all."""
        if self.forced_name is None:
            return self.tools
        return tuple(t for t in self.tools if t.name == self.forced_name)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete call as the API returns it."""

    id: str
    name: str
    arguments: str  # JSON text of the arguments object

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def resolve_tool_calling(req: ChatCompletionRequest) -> ToolCalling | None:
    """The request's tool calling, or None when it offers no tools."""
    _check_tool_messages(req.messages)
    definitions, param = _definitions(req)
    if not definitions and req.function_call not in (None, "none", "auto"):
        raise InvalidRequestError("tool_choice needs tools", param="tool_choice")
    choice = req.tool_choice if req.tool_choice is not None else req.function_call
    return tool_calling(definitions, param, choice, parallel=req.parallel_tool_calls is not False)


def tool_calling(
    definitions: Sequence[FunctionDefinition], param: str, choice: ToolChoice, parallel: bool
) -> ToolCalling | None:
    """Any endpoint's tool calling from its function definitions (found at `param`) and its choice."""
    if not definitions:
        if choice not in (None, "none", "auto"):
            raise InvalidRequestError("tool_choice needs tools", param="tool_choice")
        return None
    tools = tuple(_tool(d, f"{param}[{i}]") for i, d in enumerate(definitions))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequestError("tool names must be unique", param=param)
    mode, forced = _choice(choice)
    if forced is not None and forced not in names:
        raise InvalidRequestError(f"tool_choice names {forced!r}, which is not among the tools", param="tool_choice")
    return ToolCalling(tools, mode, forced, parallel)


def _definitions(req: ChatCompletionRequest) -> tuple[list[FunctionDefinition], str]:
    if req.tools and req.functions:
        raise InvalidRequestError("give tools or the deprecated functions, not both", param="functions")
    if req.functions:
        return list(req.functions), "functions"
    return [t.function for t in req.tools or ()], "tools"


def _tool(definition: FunctionDefinition, param: str) -> FunctionTool:
    parameters = definition.parameters if definition.parameters is not None else ANY_OBJECT
    if parameters.get("type", "object") != "object":
        raise InvalidRequestError("a function's parameters must be a JSON schema of an object", param=f"{param}.parameters")
    return FunctionTool(definition.name, definition.description, parameters)


def _choice(choice: ToolChoice) -> tuple[ChoiceMode, str | None]:
    if choice is None or choice == "auto":
        return ChoiceMode.AUTO, None
    if choice == "none":
        return ChoiceMode.NONE, None
    if choice in ("required", "any"):
        return ChoiceMode.REQUIRED, None
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name if choice.function is not None else choice.name
        if name is None:
            raise InvalidRequestError('a named tool_choice needs "function": {"name": ...}', param="tool_choice")
        return ChoiceMode.NAMED, name
    return ChoiceMode.NAMED, choice.name  # function_call {"name": ...}


def _check_tool_messages(messages: Sequence[ChatMessage]) -> None:
    """Every `tool` message answers a call an earlier assistant message made; calls are well formed."""
    call_ids: set[str] = set()
    for i, message in enumerate(messages):
        for j, call in enumerate(message.tool_calls or ()):
            call_ids.add(_checked_call(call, f"messages[{i}].tool_calls[{j}]"))
        if message.role == "tool":
            if message.tool_call_id is None:
                raise InvalidRequestError("a tool message needs tool_call_id", param=f"messages[{i}].tool_call_id")
            if message.tool_call_id not in call_ids:
                raise InvalidRequestError(
                    f"tool_call_id {message.tool_call_id!r} matches no earlier assistant tool call",
                    param=f"messages[{i}].tool_call_id",
                )


def _checked_call(call: dict[str, Any], param: str) -> str:
    function = call.get("function")
    if not isinstance(call.get("id"), str) or not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError('a tool call needs "id" and "function": {"name", "arguments"}', param=param)
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"the arguments are not valid JSON: {exc}", param=f"{param}.function.arguments")
    return call["id"]
