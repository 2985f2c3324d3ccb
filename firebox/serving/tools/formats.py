"""How a model family writes tool calls: the tags around them, the grammar that enforces them,
how to read them back, and how past calls are written into a prompt.

Each format is a small class registered by name; `format_for_template` picks one from what the
model's chat template writes (or the catalog names one). The grammar of a request with tools:
- `required` / a named function: the whole output is the calls (open tag, calls, close tag);
- `auto`: free text, until the model writes the open tag: from there the rest of the call is
  forced (a lazy trigger in llguidance's Lark), so arguments always parse and match the schema.
A call's JSON is `{"name": <one of the tools>, "arguments": <that tool's parameters>}`, the names
and schemas enforced by the grammar.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from firebox.engine.types import COMPACT_JSON_OPTIONS, GrammarSyntax, StructuredOutputSpec
from firebox.serving.structured_output import close_objects
from firebox.serving.tools.calling import ChoiceMode, FunctionTool, ToolCalling

CallJson = dict[str, Any]  # {"name": str, "arguments": dict}


class ToolFormat(ABC):
    name: ClassVar[str]
    open_tag: ClassVar[str]  # what starts the calls
    close_tag: ClassVar[str | None]  # what ends them; None: they run to the end of the output
    repeats: ClassVar[bool] = False  # parallel calls are several tagged blocks (else one block holds a list)

    @abstractmethod
    def calls_grammar(self, tools: Sequence[FunctionTool], parallel: bool) -> str:
        """Lark for what follows the open tag, through the close tag."""

    @abstractmethod
    def parse_block(self, body: str) -> list[CallJson]:
        """The calls of one block (the text between the tags); raises ValueError if malformed."""

    @abstractmethod
    def render_calls(self, calls: Sequence[CallJson]) -> str:
        """Past calls as the model would have written them (for templates that do not know tools)."""

    @abstractmethod
    def instructions(self) -> str:
        """How to call, for firebox's default tool prompt."""

    def grammar(self, calling: ToolCalling) -> StructuredOutputSpec:
        body = self.calls_grammar(calling.callable_tools, calling.parallel)
        open_tag = json.dumps(self.open_tag)
        if calling.mode is ChoiceMode.AUTO:
            lark = (
                "%llguidance {}\n"
                "start: TEXT | call_trigger calls\n"
                f"call_trigger[lazy]: TEXT {open_tag}\n"
                f"calls: {body}\n"
                "TEXT: /(.|\\n)*/\n"
            )
        else:
            lark = f"start: {open_tag} {body}\n"
        return StructuredOutputSpec(GrammarSyntax.LARK, lark)


def call_schema(tool: FunctionTool) -> dict[str, Any]:
    """The JSON of one call of `tool`: its name, and arguments matching its parameters."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": close_objects(tool.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def json_lark(schema: dict[str, Any]) -> str:
    """A JSON schema embedded in Lark, written compactly as the rest of firebox's JSON."""
    return "%json " + json.dumps({**schema, "x-guidance": COMPACT_JSON_OPTIONS})


def any_call_schema(tools: Sequence[FunctionTool]) -> dict[str, Any]:
    schemas = [call_schema(t) for t in tools]
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def call_list_schema(tools: Sequence[FunctionTool], parallel: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": any_call_schema(tools), "minItems": 1}
    return schema if parallel else {**schema, "maxItems": 1}


def _parse_call(value: Any) -> CallJson:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError(f"not a call: {value!r}")
    arguments = value.get("arguments", value.get("parameters", {}))
    return {"name": value["name"], "arguments": arguments}


class JsonListFormat(ToolFormat):
    """firebox's default (SmolLM2 was trained on it): `<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>`."""

    name = "json_list"
    open_tag = "<tool_call>"
    close_tag = "</tool_call>"

    def calls_grammar(self, tools: Sequence[FunctionTool], parallel: bool) -> str:
        return f"{json_lark(call_list_schema(tools, parallel))} {json.dumps(self.close_tag)}"

    def parse_block(self, body: str) -> list[CallJson]:
        value = json.loads(body)
        return [_parse_call(item) for item in (value if isinstance(value, list) else [value])]

    def render_calls(self, calls: Sequence[CallJson]) -> str:
        return f"{self.open_tag}{json.dumps(list(calls))}{self.close_tag}"

    def instructions(self) -> str:
        return (
            "To call functions, reply with only the calls, as a JSON list inside tags:\n"
            '<tool_call>[{"name": "<function name>", "arguments": {<arguments as a JSON object>}}]</tool_call>\n'
            "List several calls to call several functions at once. If no function fits, answer in plain text."
        )


class HermesFormat(ToolFormat):
    """Hermes / Qwen: one `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` block per call."""

    name = "hermes"
    open_tag = "<tool_call>"
    close_tag = "</tool_call>"
    repeats = True

    def calls_grammar(self, tools: Sequence[FunctionTool], parallel: bool) -> str:
        call = f'"\\n" {json_lark(any_call_schema(tools))} "\\n" {json.dumps(self.close_tag)}'
        if not parallel:
            return call
        return f'{call} ("\\n" {json.dumps(self.open_tag)} {call})*'

    def parse_block(self, body: str) -> list[CallJson]:
        return [_parse_call(json.loads(body))]

    def render_calls(self, calls: Sequence[CallJson]) -> str:
        return "\n".join(f"{self.open_tag}\n{json.dumps(call)}\n{self.close_tag}" for call in calls)

    def instructions(self) -> str:
        return (
            "To call a function, reply with a JSON object inside tags, one block per call:\n"
            '<tool_call>\n{"name": "<function name>", "arguments": {<arguments as a JSON object>}}\n</tool_call>'
        )


FORMATS: dict[str, type[ToolFormat]] = {cls.name: cls for cls in (JsonListFormat, HermesFormat)}
DEFAULT_FORMAT = JsonListFormat.name


def tool_format(name: str) -> ToolFormat:
    try:
        return FORMATS[name]()
    except KeyError:
        raise ValueError(f"unknown tool call format {name!r}; known: {', '.join(sorted(FORMATS))}") from None


def format_for_template(chat_template: str | None) -> ToolFormat:
    """The format a chat template writes its calls in; firebox's default where it writes none."""
    template = chat_template or ""
    if "<tool_call>" in template:
        return HermesFormat()
    return JsonListFormat()
