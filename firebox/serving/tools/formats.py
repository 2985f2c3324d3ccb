"""How a model family writes tool calls: the tags around them, the grammar that enforces them,
how to read them back, and how past calls are written into a prompt.

Each format is a small class registered by name; `format_for_template` picks the first whose
marker the model's chat template contains (or the catalog names one). The grammar of a request
with tools:
- `required` / a named function: the whole output is the calls (open tag, calls, close tag);
- `auto`: free text, until the model writes the open tag: from there the rest of the call is
  forced, so arguments always parse and match the schema. A text tag is a lazy trigger in
  llguidance's Lark; a tag the tokenizer has as a special token (Mistral's `[TOOL_CALLS]`) is that
  token, which text can never match, so no trigger is needed (and the request keeps special
  tokens in its text, for the parser to see the tag).
- Llama 3's calls have no tag: they are the whole output, a JSON object. In `auto` the output is
  a call exactly when it opens with `{` (free text may not start with `{` or whitespace), as
  llguidance's own Llama 3.1 example does; later braces are text.
A call's JSON is `{"name": <one of the tools>, "arguments": <that tool's parameters>}` (Llama:
`"parameters"`), the names and schemas enforced by the grammar.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from firebox.engine.types import GrammarSyntax, StructuredOutputSpec
from firebox.loader.tokenizer import Tokenizer
from firebox.serving.structured_output import close_objects, json_lark
from firebox.serving.tools.calling import ChoiceMode, FunctionTool, ToolCalling

CallJson = dict[str, Any]  # {"name": str, "arguments": dict}
TagLark = Callable[[str], str]  # a tag as Lark: its text, or its special token
FREE_TEXT = "TEXT: /(.|\\n)*/\n"


class ToolFormat(ABC):
    name: ClassVar[str]
    open_tag: ClassVar[str]  # what starts the calls
    close_tag: ClassVar[str | None]  # what ends them; None: they run to the end of the output
    repeats: ClassVar[bool] = False  # parallel calls are several tagged blocks (else one block holds a list)
    opens_output: ClassVar[bool] = False  # no tag: calls are an output that opens with `open_tag`, their first character
    lead_in: ClassVar[str] = ""  # dropped before calls that open the output (Llama's `<|python_tag|>`)
    template_markers: ClassVar[tuple[str, ...]] = ()  # text that says a chat template writes this format

    @abstractmethod
    def calls_grammar(self, tools: Sequence[FunctionTool], parallel: bool, tag: TagLark) -> str:
        """Lark for what follows the open tag, through the close tag (written with `tag`)."""

    @abstractmethod
    def parse_block(self, body: str) -> list[CallJson]:
        """The calls of one block (the text between the tags); raises ValueError if malformed."""

    @abstractmethod
    def render_calls(self, calls: Sequence[CallJson]) -> str:
        """Past calls as the model would have written them (for templates that do not know tools)."""

    @abstractmethod
    def instructions(self) -> str:
        """How to call, for firebox's default tool prompt."""

    def special_tags(self, tokenizer: Tokenizer | None) -> dict[str, int]:
        """The tags the tokenizer has as special tokens, by id (the detokenizer drops those unless told)."""
        if tokenizer is None:
            return {}
        tags = [t for t in (self.open_tag, self.close_tag) if t and not self.opens_output]
        ids = {tag: tokenizer.token_to_id(tag) for tag in tags}
        return {tag: i for tag, i in ids.items() if i is not None and i in tokenizer.special_token_ids}

    def grammar(self, calling: ToolCalling, tokenizer: Tokenizer | None = None) -> StructuredOutputSpec:
        special = self.special_tags(tokenizer)

        def tag(text: str) -> str:
            return f"<[{special[text]}]>" if text in special else json.dumps(text)

        # a named function is one call of it (as OpenAI answers a named tool_choice), whatever parallel says
        parallel = calling.parallel and calling.mode is not ChoiceMode.NAMED
        body = self.calls_grammar(calling.callable_tools, parallel, tag)
        if self.opens_output:
            lark = _opening_grammar(body, calling.mode, self.open_tag)
        elif calling.mode is not ChoiceMode.AUTO:
            lark = f"start: {tag(self.open_tag)} {body}\n"
        elif self.open_tag in special:  # text never matches a special token: no trigger needed
            lark = f"start: TEXT | TEXT {tag(self.open_tag)} calls\ncalls: {body}\n{FREE_TEXT}"
        else:
            lark = (
                "%llguidance {}\n"
                "start: TEXT | call_trigger calls\n"
                f"call_trigger[lazy]: TEXT {tag(self.open_tag)}\n"
                f"calls: {body}\n{FREE_TEXT}"
            )
        return StructuredOutputSpec(GrammarSyntax.LARK, lark)


def _opening_grammar(body: str, mode: ChoiceMode, open_tag: str) -> str:
    """Calls with no tag: the whole output; in `auto`, or text that does not open like one."""
    if mode is not ChoiceMode.AUTO:
        return f"start: {body}\n"
    not_a_call = f"[^{re.escape(open_tag[0])}\\s]"
    return f"start: TEXT | calls\ncalls: {body}\nTEXT: /({not_a_call}(.|\\n)*)?/\n"


def call_schema(tool: FunctionTool, arguments_key: str = "arguments") -> dict[str, Any]:
    """The JSON of one call of `tool`: its name, and arguments matching its parameters."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, arguments_key: close_objects(tool.parameters)},
        "required": ["name", arguments_key],
        "additionalProperties": False,
    }


def any_call_schema(tools: Sequence[FunctionTool], arguments_key: str = "arguments") -> dict[str, Any]:
    schemas = [call_schema(t, arguments_key) for t in tools]
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

    def calls_grammar(self, tools: Sequence[FunctionTool], parallel: bool, tag: TagLark) -> str:
        return f"{json_lark(call_list_schema(tools, parallel))} {tag(self.close_tag or '')}"

    def parse_block(self, body: str) -> list[CallJson]:
        value = json.loads(body)
        return [_parse_call(item) for item in (value if isinstance(value, list) else [value])]

    def render_calls(self, calls: Sequence[CallJson]) -> str:
        return f"{self.open_tag}{json.dumps(list(calls))}{self.close_tag or ''}"

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
    template_markers = ("<tool_call>",)

    def calls_grammar(self, tools: Sequence[FunctionTool], parallel: bool, tag: TagLark) -> str:
        call = f'"\\n" {json_lark(any_call_schema(tools))} "\\n" {tag(self.close_tag or "")}'
        if not parallel:
            return call
        return f'{call} ("\\n" {tag(self.open_tag)} {call})*'

    def parse_block(self, body: str) -> list[CallJson]:
        return [_parse_call(json.loads(body))]

    def render_calls(self, calls: Sequence[CallJson]) -> str:
        return "\n".join(f"{self.open_tag}\n{json.dumps(call)}\n{self.close_tag}" for call in calls)

    def instructions(self) -> str:
        return (
            "To call a function, reply with a JSON object inside tags, one block per call:\n"
            '<tool_call>\n{"name": "<function name>", "arguments": {<arguments as a JSON object>}}\n</tool_call>'
        )


class MistralFormat(JsonListFormat):
    """Mistral (v3 tokenizer and later): `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`, the
    list running to the end of the output. `[TOOL_CALLS]` is a special token in Mistral's tokenizers."""

    name = "mistral"
    open_tag = "[TOOL_CALLS]"
    close_tag = None
    template_markers = ("[TOOL_CALLS]",)

    def calls_grammar(self, tools: Sequence[FunctionTool], parallel: bool, tag: TagLark) -> str:
        return f'" "? {json_lark(call_list_schema(tools, parallel))}'  # the templates write "[TOOL_CALLS] ["

    def instructions(self) -> str:
        return (
            "To call functions, reply with only [TOOL_CALLS] followed by the calls as a JSON list:\n"
            '[TOOL_CALLS] [{"name": "<function name>", "arguments": {<arguments as a JSON object>}}]'
        )


class Llama3JsonFormat(ToolFormat):
    """Llama 3.1 / 3.2 / 3.3 JSON tool calling: the whole output is `{"name": ..., "parameters": {...}}`,
    possibly after `<|python_tag|>`; parallel calls are separated by `; ` (as vLLM reads them)."""

    name = "llama3_json"
    open_tag = "{"
    close_tag = None
    opens_output = True
    lead_in = "<|python_tag|>"
    template_markers = ("<|python_tag|>", "Environment: ipython")

    def calls_grammar(self, tools: Sequence[FunctionTool], parallel: bool, tag: TagLark) -> str:
        call = json_lark(any_call_schema(tools, "parameters"))
        return f'{call} ("; " {call})*' if parallel else call

    def parse_block(self, body: str) -> list[CallJson]:
        text, decoder, calls = self.open_tag + body, json.JSONDecoder(), []  # the tag is the JSON's brace
        position = 0
        while position < len(text):
            value, position = decoder.raw_decode(text, position)
            calls.append(_parse_call(value))
            position = len(text) - len(text[position:].lstrip().removeprefix(";").lstrip())
        return calls

    def render_calls(self, calls: Sequence[CallJson]) -> str:
        return "; ".join(json.dumps({"name": c["name"], "parameters": c["arguments"]}) for c in calls)

    def instructions(self) -> str:
        return (
            "To call a function, reply with only a JSON object, nothing before it:\n"
            '{"name": "<function name>", "parameters": {<arguments as a JSON object>}}\n'
            "Separate several calls with '; '. If no function fits, answer in plain text."
        )


# Registration order is detection order: the first format whose marker a template contains.
FORMATS: dict[str, type[ToolFormat]] = {
    cls.name: cls for cls in (HermesFormat, MistralFormat, Llama3JsonFormat, JsonListFormat)
}
DEFAULT_FORMAT = JsonListFormat.name


def tool_format(name: str) -> ToolFormat:
    try:
        return FORMATS[name]()
    except KeyError:
        raise ValueError(f"unknown tool call format {name!r}; known: {', '.join(sorted(FORMATS))}") from None


def format_for_template(chat_template: str | None, name: str | None = None) -> ToolFormat:
    """The format named (a catalog setting), else the one a chat template writes its calls in,
    else firebox's default."""
    if name is not None:
        return tool_format(name)
    template = chat_template or ""
    for cls in FORMATS.values():
        if any(marker in template for marker in cls.template_markers):
            return cls()
    return tool_format(DEFAULT_FORMAT)
